import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';

/** File name of the persisted identity inside the data directory. */
export const PEER_KEY_FILE = 'peer.key';

/**
 * Load the node's private key from `<dataDir>/peer.key`, or create one (Ed25519) and persist it
 * with mode 0600. Without a data directory the key is ephemeral.
 */
export async function loadOrCreateKey(dataDir: string | undefined): Promise<PrivateKey> {
  if (dataDir === undefined) {
    return generateKeyPair('Ed25519');
  }
  const file = join(dataDir, PEER_KEY_FILE);
  let bytes: Buffer | undefined;
  try {
    bytes = await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot read peer identity ${file}: ${(err as Error).message}`);
    }
  }
  if (bytes !== undefined) {
    try {
      const key = privateKeyFromProtobuf(bytes);
      // tighten permissions if someone loosened them
      await chmod(file, 0o600).catch(() => {});
      return key;
    } catch (err) {
      throw new Error(
        `peer identity ${file} is corrupt (${(err as Error).message}); remove it to generate a new identity`,
      );
    }
  }
  const key = await generateKeyPair('Ed25519');
  await mkdir(dataDir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600 });
  await rename(tmp, file);
  return key;
}
