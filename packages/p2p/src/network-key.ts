// The cluster's network key file: one or more keys, one per line, each 64 hex characters (32 random
// bytes); blank lines and lines starting with '#' are ignored. The first key is the primary (used
// to dial and to sign); every listed key is accepted. Rotation: add the new key first, roll, then
// drop the old one. Errors name the line, never its content.
import { readFile } from 'node:fs/promises';

/** Bytes of one network key. */
export const NETWORK_KEY_LENGTH = 32;

const HEX_KEY = /^[0-9a-fA-F]{64}$/;

/** Parse a network key file's text: its keys in order (duplicates dropped). Throws naming the line. */
export function parseNetworkKeys(text: string, source = 'network key file'): Uint8Array[] {
  const keys: Uint8Array[] = [];
  const seen = new Set<string>();
  const lines = text.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) {
      continue;
    }
    if (!HEX_KEY.test(line)) {
      throw new Error(`${source} line ${i + 1}: expected a key of 64 hex characters (32 bytes)`);
    }
    const hex = line.toLowerCase();
    if (!seen.has(hex)) {
      seen.add(hex);
      keys.push(Uint8Array.from(Buffer.from(hex, 'hex')));
    }
  }
  if (keys.length === 0) {
    throw new Error(`${source}: no key (one line of 64 hex characters expected)`);
  }
  return keys;
}

/** Read and parse a network key file. Errors name the file and the line, never a key. */
export async function readNetworkKeyFile(path: string): Promise<Uint8Array[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new Error(`cannot read network key file ${path} (${code})`);
  }
  return parseNetworkKeys(text, `network key file ${path}`);
}
