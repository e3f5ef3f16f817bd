import { execFileSync } from 'node:child_process';
import { createHash, randomUUID, sign, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Cleanup, type Daemon, spawnDaemon } from './daemon.ts';
import { waitFor } from './net.ts';
import { registryConfig } from './registry.ts';

export interface AuthRegistryOptions {
  /** Loopback address for the registry and the token issuer (from an AddressBlock). */
  host: string;
  /** Registry TCP port. Default 5000. */
  port?: number;
  /** Token issuer TCP port. Default 0 (any free port). */
  issuerPort?: number;
  /** Accounts the issuer knows: username -> password. They get pull and push on every repository. */
  users?: Record<string, string>;
  /** Repositories anonymous clients may pull (everything else is private). Default none. */
  publicRepositories?: string[];
  /** Start with token auth on (default true); `start({ auth })` switches it on restart. */
  auth?: boolean;
  /** Token lifetime in seconds (`expires_in`). Default 300. */
  tokenLifetimeS?: number;
  /** Storage, keys and logs. Default: a fresh temp dir, removed on dispose. */
  dir?: string;
  /** Registers `dispose()` with `t.after`. */
  t?: Cleanup;
  /** Binary. Default `/usr/bin/docker-registry`. */
  binary?: string;
  /** The token realm the registry names in its challenge. Default: this rig's own issuer. */
  realm?: string;
}

/** One request the token issuer answered. */
export interface TokenRequestRecord {
  /** Authenticated account, undefined for anonymous. */
  account?: string;
  service?: string;
  scopes: string[];
  /** HTTP status answered (401 for wrong credentials). */
  status: number;
  /** Granted access, one entry per repository. */
  granted: { name: string; actions: string[] }[];
}

export interface AuthRegistryHandle {
  /** `http://host:port` of the registry. */
  readonly url: string;
  /** `host:port` as used in image references. */
  readonly host: string;
  /** Token endpoint (`realm`), `http://host:issuerPort/token`. */
  readonly realm: string;
  /** `service` (the JWT audience). */
  readonly service: string;
  /** `iss` of the tokens. */
  readonly issuer: string;
  readonly dir: string;
  readonly logFile: string;
  /** Every token request answered so far (oldest first). */
  readonly tokenRequests: TokenRequestRecord[];
  /** Docker config.json contents with the credentials of `user` for this registry. */
  dockerConfig(user: string): { auths: Record<string, { auth: string }> };
  /** (Re)starts the registry on the same storage, with token auth on or off (default: as last time). */
  start(opts?: { auth?: boolean }): Promise<void>;
  /** Stops the registry (the issuer keeps running; storage kept). */
  stop(): Promise<void>;
  running(): boolean;
  logs(): string;
  /** Stops the registry and the issuer, removes the temp dir (if the rig created it). */
  dispose(): Promise<void>;
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let acc = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31];
  return out;
}

/**
 * The libtrust key ID docker-registry 2.8 matches a JWT's `kid` against: base32 of the first 240 bits of
 * sha256(DER SubjectPublicKeyInfo), in 12 groups of 4 characters joined by ':'.
 */
export function libtrustKeyId(spkiDer: Uint8Array): string {
  const b32 = base32(createHash('sha256').update(spkiDer).digest().subarray(0, 30));
  return (b32.match(/.{4}/g) ?? []).join(':');
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

function parseBasic(h: string | undefined): { user: string; password: string } | undefined {
  if (!h?.startsWith('Basic ')) return undefined;
  const s = Buffer.from(h.slice(6), 'base64').toString('utf8');
  const i = s.indexOf(':');
  return i < 0 ? undefined : { user: s.slice(0, i), password: s.slice(i + 1) };
}

/**
 * Runs Debian's docker-registry (distribution 2.8) with `auth: token` and a token issuer in this process.
 * The issuer signs ES256 JWTs with a key whose self-signed certificate (made with the `openssl` CLI) is the
 * registry's `rootcertbundle`; the JWT header's `kid` is the libtrust key ID of that key. Configured users
 * get pull+push on every repository; anonymous clients get pull on `publicRepositories` only.
 */
export async function startAuthRegistry(opts: AuthRegistryOptions): Promise<AuthRegistryHandle> {
  const port = opts.port ?? 5000;
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'ferry-rig-auth-registry-'));
  const storage = join(dir, 'storage');
  mkdirSync(storage, { recursive: true });
  const keyFile = join(dir, 'issuer-key.pem');
  const certFile = join(dir, 'issuer-cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
    ].concat(['-subj', '/CN=ferry-rig-token-issuer', '-keyout', keyFile, '-out', certFile]),
    { stdio: 'pipe' },
  );
  const privateKey = readFileSync(keyFile);
  const cert = new X509Certificate(readFileSync(certFile));
  const kid = libtrustKeyId(cert.publicKey.export({ type: 'spki', format: 'der' }));
  const users = opts.users ?? {};
  const publicRepos = new Set(opts.publicRepositories ?? []);
  const lifetime = opts.tokenLifetimeS ?? 300;
  const service = 'ferry-rig-registry';
  const issuer = 'ferry-rig-token-issuer';
  const tokenRequests: TokenRequestRecord[] = [];

  /**
   * The token endpoint, both ways clients use it: GET with Basic auth and `service`/`scope` in the query
   * (the Docker token spec), and POST with a form body (`grant_type=password`, `username`, `password`,
   * `service`, `scope`: the OAuth2 flow containerd uses when it has credentials).
   */
  function issue(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://issuer');
    if (url.pathname !== '/token' || (req.method !== 'GET' && req.method !== 'POST')) {
      res.writeHead(404).end();
      return;
    }
    if (req.method === 'GET') {
      grant(url.searchParams, req.headers.authorization, res);
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      if (form.get('grant_type') !== 'password') {
        // refresh tokens are not issued here; clients then fall back to GET
        res.writeHead(404).end();
        return;
      }
      const user = form.get('username') ?? '';
      const basic = `Basic ${Buffer.from(`${user}:${form.get('password') ?? ''}`).toString('base64')}`;
      grant(form, basic, res);
    });
  }

  function grant(params: URLSearchParams, authorization: string | undefined, res: ServerResponse): void {
    const svc = params.get('service') ?? undefined;
    const scopes = params.getAll('scope').flatMap((s) => s.split(' ').filter(Boolean));
    const basic = parseBasic(authorization);
    if (authorization !== undefined && (!basic || users[basic.user] !== basic.password)) {
      tokenRequests.push({ service: svc, scopes, status: 401, granted: [] });
      res.writeHead(401, {
        'content-type': 'application/json',
        'www-authenticate': 'Basic realm="ferry-rig"',
      });
      res.end(JSON.stringify({ details: 'wrong username or password' }));
      return;
    }
    const account = basic?.user;
    const granted: { type: string; name: string; actions: string[] }[] = [];
    for (const scope of scopes) {
      const [type, ...rest] = scope.split(':');
      const actions = (rest.pop() ?? '').split(',').filter(Boolean);
      const name = rest.join(':');
      if (type !== 'repository' || !name) continue;
      const allowed = account !== undefined ? ['pull', 'push'] : publicRepos.has(name) ? ['pull'] : [];
      granted.push({ type: 'repository', name, actions: actions.filter((a) => allowed.includes(a)) });
    }
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'ES256', typ: 'JWT', kid };
    const claims = {
      iss: issuer,
      sub: account ?? '',
      aud: svc ?? service,
      exp: now + lifetime,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access: granted,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    const token = `${input}.${b64url(sig)}`;
    tokenRequests.push({
      ...(account === undefined ? {} : { account }),
      service: svc,
      scopes,
      status: 200,
      granted: granted.map(({ name, actions }) => ({ name, actions })),
    });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        token,
        access_token: token,
        expires_in: lifetime,
        issued_at: new Date(now * 1000).toISOString(),
      }),
    );
  }

  const server: Server = createServer(issue);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.issuerPort ?? 0, opts.host, () => resolve());
  });
  const realm = opts.realm ?? `http://${opts.host}:${(server.address() as AddressInfo).port}/token`;

  const configFile = join(dir, 'config.yml');
  const logFile = join(dir, 'registry.log');
  const writeConfig = (auth: boolean) =>
    writeFileSync(
      configFile,
      registryConfig(
        storage,
        `${opts.host}:${port}`,
        auth ? { realm, service, issuer, rootcertbundle: certFile } : undefined,
      ),
    );

  const url = `http://${opts.host}:${port}`;
  let daemon: Daemon | undefined;
  let authOn = opts.auth ?? true;

  const handle: AuthRegistryHandle = {
    url,
    host: `${opts.host}:${port}`,
    realm,
    service,
    issuer,
    dir,
    logFile,
    tokenRequests,
    dockerConfig(user) {
      const password = users[user];
      if (password === undefined) throw new Error(`no user ${user}`);
      return {
        auths: { [`${opts.host}:${port}`]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } },
      };
    },
    async start(startOpts = {}) {
      const want = startOpts.auth ?? authOn;
      if (daemon?.running()) {
        if (want === authOn) return;
        await daemon.stop(5000);
      }
      authOn = want;
      writeConfig(authOn);
      const d = spawnDaemon(opts.binary ?? '/usr/bin/docker-registry', ['serve', configFile], logFile);
      daemon = d;
      try {
        await waitFor(
          async () => {
            if (!d.running()) throw new Error(`docker-registry exited:\n${d.logs()}`);
            const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2000) });
            await res.arrayBuffer();
            return authOn ? res.status === 401 && res.headers.has('www-authenticate') : res.status === 200;
          },
          { timeoutMs: 15_000, what: `docker-registry on ${url}` },
        );
      } catch (err) {
        await d.stop(2000);
        throw new Error(`${(err as Error).message}\n--- ${logFile}\n${d.logs()}`);
      }
    },
    async stop() {
      await daemon?.stop(5000);
    },
    running: () => daemon?.running() ?? false,
    logs: () => daemon?.logs() ?? '',
    async dispose() {
      await handle.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (ownDir && !process.env.FERRY_RIG_KEEP) rmSync(dir, { recursive: true, force: true });
    },
  };
  opts.t?.after(() => handle.dispose());
  try {
    await handle.start();
  } catch (err) {
    server.close();
    throw err;
  }
  return handle;
}
