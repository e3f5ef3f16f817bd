/**
 * OCI error codes Ferry emits. The distribution-spec codes, plus `TAG_INVALID` and `RANGE_INVALID`
 * (both from the Docker registry's v2 error set).
 */
export type OciErrorCode =
  | 'BLOB_UNKNOWN'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_INVALID'
  | 'TAG_INVALID'
  | 'UNSUPPORTED'
  | 'RANGE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'TOOMANYREQUESTS';

/** The JSON body of an OCI error response (`{ errors: [...] }`). */
export interface OciErrorBody {
  errors: { code: string; message: string; detail?: unknown }[];
}

const STATUS: Readonly<Record<OciErrorCode, number>> = {
  BLOB_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_INVALID: 400,
  TAG_INVALID: 400,
  UNSUPPORTED: 405,
  RANGE_INVALID: 416,
  UNAUTHORIZED: 401,
  DENIED: 403,
  TOOMANYREQUESTS: 429,
};

/** The HTTP status that goes with an error code by default (e.g. BLOB_UNKNOWN -> 404). */
export function errorStatus(code: OciErrorCode): number {
  return STATUS[code];
}

/** Builds an OCI error body holding one error. `detail` is left out when undefined. */
export function errorBody(code: OciErrorCode, message: string, detail?: unknown): OciErrorBody {
  return { errors: [detail === undefined ? { code, message } : { code, message, detail }] };
}

/** The error every parser in this package throws: an OCI code, its HTTP status and an optional detail. */
export class OciError extends Error {
  /** The OCI error code. */
  code: OciErrorCode;
  /** The HTTP status to answer with (defaults to the code's usual status). */
  status: number;
  /** Extra, JSON-serialisable information for the error body. */
  detail?: unknown;

  constructor(code: OciErrorCode, message: string, status?: number, detail?: unknown) {
    super(message);
    this.name = 'OciError';
    this.code = code;
    this.status = status ?? STATUS[code];
    if (detail !== undefined) this.detail = detail;
  }

  /** The OCI error body for this error (so `JSON.stringify(err)` is a valid response body). */
  toJSON(): OciErrorBody {
    return errorBody(this.code, this.message, this.detail);
  }
}

/** What a client reads for a request it got wrong: fixed texts, never its own input (the log has the details). */
const PUBLIC_MESSAGE = {
  NAME_UNKNOWN: 'not a registry pull API path',
  NAME_INVALID: 'invalid repository name',
  DIGEST_INVALID: 'invalid digest',
  TAG_INVALID: 'invalid tag',
  RANGE_INVALID: 'invalid, unsupported or unsatisfiable Range',
} as const satisfies Partial<Record<OciErrorCode, string>>;

/** The fixed text for `code` (see PUBLIC_MESSAGE), else `fallback`. */
export function publicMessage(code: OciErrorCode, fallback: string): string {
  return (PUBLIC_MESSAGE as Partial<Record<OciErrorCode, string>>)[code] ?? fallback;
}
