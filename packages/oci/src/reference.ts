import { isDigest, shorten } from './digest.ts';
import { OciError } from './errors.ts';
import { DOCKER_HUB, normalizeRegistry } from './registries.ts';

/** An image reference, always with a registry and a full repository path. */
export interface Reference {
  /** Normalised registry host[:port], e.g. 'docker.io', 'localhost:5000', '[::1]:5000'. */
  registry: string;
  /** Repository path, e.g. 'library/nginx'. */
  repository: string;
  /** Tag, when given (or 'latest' when neither tag nor digest is given). */
  tag?: string;
  /** Digest, when given. */
  digest?: string;
}

/** Maximum length of a repository name (and of the `registry/name` part of a reference). */
export const NAME_MAX_LENGTH = 255;

const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*';
const REPOSITORY_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const REGISTRY_RE = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:.]+\\])(?::[0-9]{1,5})?$`,
);

/** True when `host` is a registry host[:port] (DNS name, IPv4, or IPv6 in brackets). */
export function isValidRegistry(host: string): boolean {
  return typeof host === 'string' && host.length <= NAME_MAX_LENGTH && REGISTRY_RE.test(host);
}

/** True when `name` matches the distribution-spec repository name grammar (at most 255 characters). */
export function isValidRepository(name: string): boolean {
  return typeof name === 'string' && name.length <= NAME_MAX_LENGTH && REPOSITORY_RE.test(name);
}

/** True when `tag` matches `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`. */
export function isValidTag(tag: string): boolean {
  return typeof tag === 'string' && TAG_RE.test(tag);
}

/** The DHT/policy key of a tag: '<registry>/<repo>:<tag>' (registry normalised). */
export function tagKey(registry: string, repository: string, tag: string): string {
  return `${normalizeRegistry(registry)}/${repository}:${tag}`;
}

/**
 * Adds Docker Hub's implicit 'library/' to a single-component repository on docker.io.
 * `registry` must already be normalised.
 */
export function defaultRepository(registry: string, repository: string): string {
  return registry === DOCKER_HUB && !repository.includes('/') ? `library/${repository}` : repository;
}

/**
 * Parses `[registry/]repo[:tag][@digest]`. Defaults: no registry -> docker.io; a single-component
 * repository on docker.io gets 'library/'; neither tag nor digest -> tag 'latest'. The first path
 * component is a registry when it contains '.' or ':', is 'localhost', or is an IPv6 address in
 * brackets. Throws OciError NAME_INVALID, TAG_INVALID or DIGEST_INVALID (400).
 */
export function parseReference(s: string): Reference {
  if (typeof s !== 'string' || s.length === 0) throw new OciError('NAME_INVALID', 'empty image reference');
  const quoted = JSON.stringify(shorten(s));
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) {
      throw new OciError(
        'DIGEST_INVALID',
        `invalid digest ${JSON.stringify(shorten(digest))} in reference ${quoted}`,
      );
    }
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon !== -1 && colon > rest.lastIndexOf('/') && !rest.slice(colon).includes(']')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) {
      throw new OciError('TAG_INVALID', `invalid tag ${JSON.stringify(shorten(tag))} in reference ${quoted}`);
    }
  }
  if (rest.length === 0) throw new OciError('NAME_INVALID', `missing repository in reference ${quoted}`);
  if (rest.length > NAME_MAX_LENGTH) {
    throw new OciError(
      'NAME_INVALID',
      `repository name longer than ${NAME_MAX_LENGTH} characters: ${quoted}`,
    );
  }
  let registry = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf('/');
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      if (!isValidRegistry(first)) {
        throw new OciError(
          'NAME_INVALID',
          `invalid registry ${JSON.stringify(first)} in reference ${quoted}`,
        );
      }
      registry = normalizeRegistry(first);
      repository = rest.slice(slash + 1);
    }
  }
  if (!isValidRepository(repository)) {
    throw new OciError(
      'NAME_INVALID',
      `invalid repository name ${JSON.stringify(shorten(repository))} in ${quoted}`,
    );
  }
  repository = defaultRepository(registry, repository);
  const ref: Reference = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  if (tag === undefined && digest === undefined) ref.tag = 'latest';
  return ref;
}

/** Formats a reference as 'registry/repo[:tag][@digest]'. */
export function formatReference(r: Reference): string {
  let out = `${r.registry}/${r.repository}`;
  if (r.tag !== undefined) out += `:${r.tag}`;
  if (r.digest !== undefined) out += `@${r.digest}`;
  return out;
}
