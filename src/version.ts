/** This package's version, read from package.json: for --version, the User-Agent and relay records. */
import { readFileSync } from 'node:fs';

const packageJson = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

export const VERSION: string = packageJson.version;
export const USER_AGENT = `suekk-sync/${VERSION}`;
