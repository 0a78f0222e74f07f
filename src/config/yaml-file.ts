import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

/** Reads and parses a YAML (or JSON) file; `fail` turns the problem into the caller's own error type. */
export function readYamlDocument(file: string, fail: (problems: string[]) => Error): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw fail([`cannot read: ${(e as Error).message}`]);
  }
  try {
    return parseYaml(text);
  } catch (e) {
    throw fail([`not valid YAML: ${(e as Error).message}`]);
  }
}

/** A case-insensitive JavaScript regular expression written in a mappings file (checked to compile). */
export const regexPattern = z.string().refine(
  (s) => {
    try {
      new RegExp(s, 'i');
      return true;
    } catch {
      return false;
    }
  },
  { message: 'a valid regular expression' },
);
