/** A parsed `WWW-Authenticate` challenge. */
export interface Challenge {
  /** Lower-cased scheme: 'bearer', 'basic', … */
  scheme: string;
  params: Record<string, string>;
}

const TOKEN = /[!#$%&'*+.^_`|~0-9A-Za-z-]+/y;

/**
 * Parses the first challenge of a `WWW-Authenticate` header (RFC 7235 auth-params, quoted strings with
 * backslash escapes). Registries send one; undefined when the header is absent or unparseable.
 */
export function parseChallenge(header: string | string[] | undefined): Challenge | undefined {
  const h = Array.isArray(header) ? header[0] : header;
  if (!h) return undefined;
  const m = /^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*/.exec(h);
  if (!m?.[1]) return undefined;
  const params: Record<string, string> = {};
  let i = m[0].length;
  while (i < h.length) {
    while (i < h.length && (h[i] === ',' || h[i] === ' ' || h[i] === '\t')) i++;
    TOKEN.lastIndex = i;
    const name = TOKEN.exec(h);
    if (!name) break;
    i = TOKEN.lastIndex;
    while (h[i] === ' ') i++;
    if (h[i] !== '=') break; // a new challenge (scheme token) or token68: stop at the first challenge
    i++;
    while (h[i] === ' ') i++;
    let value = '';
    if (h[i] === '"') {
      i++;
      while (i < h.length && h[i] !== '"') {
        if (h[i] === '\\' && i + 1 < h.length) i++;
        value += h[i];
        i++;
      }
      i++;
    } else {
      TOKEN.lastIndex = i;
      const v = TOKEN.exec(h);
      value = v ? v[0] : '';
      i = v ? TOKEN.lastIndex : i;
    }
    params[name[0].toLowerCase()] = value;
  }
  return { scheme: m[1].toLowerCase(), params };
}
