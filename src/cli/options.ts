/**
 * Parsers for commander options. A bad value is a usage error (exit 2) that commander prints with
 * the option and the value, e.g. "option '--port <port>' argument '70000' is invalid. It must be a
 * whole number from 0 to 65535."
 */
import { InvalidArgumentError } from 'commander';

export function intOption(min: number, max = Number.MAX_SAFE_INTEGER) {
  const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`;
  return (raw: string): number => {
    // Digits only: Number() would also take "", " 8", "1e3" and "0x10".
    const value = /^\d+$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`It must be a whole number, ${range}.`);
    }
    return value;
  };
}

export function numberOption(min: number, max = Number.MAX_VALUE) {
  const range = max === Number.MAX_VALUE ? `${min} or more` : `from ${min} to ${max}`;
  return (raw: string): number => {
    const value = raw.trim() === '' ? NaN : Number(raw);
    if (!Number.isFinite(value) || value < min || value > max) {
      throw new InvalidArgumentError(`It must be a number, ${range}.`);
    }
    return value;
  };
}
