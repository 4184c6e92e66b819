/** Parsers for commander options: a bad value is a usage error naming the flag. */
import { InvalidArgumentError } from 'commander';

export function intOption(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}, not ${JSON.stringify(raw)}.`);
    }
    return value;
  };
}

export function numberOption(min: number, max = Number.MAX_VALUE) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!Number.isFinite(value) || value < min || value > max) {
      throw new InvalidArgumentError(`expected a number from ${min} to ${max}, not ${JSON.stringify(raw)}.`);
    }
    return value;
  };
}
