import { status as GrpcStatus } from '@grpc/grpc-js';

/** Error codes of {@link ContainerdError}: the gRPC status names, plus TOO_LARGE from `readAll`. */
export type ContainerdErrorCode =
  | 'NOT_FOUND'
  | 'INVALID_ARGUMENT'
  | 'FAILED_PRECONDITION'
  | 'OUT_OF_RANGE'
  | 'ALREADY_EXISTS'
  | 'UNAVAILABLE'
  | 'CANCELLED'
  | 'DEADLINE_EXCEEDED'
  | 'UNIMPLEMENTED'
  | 'PERMISSION_DENIED'
  | 'TOO_LARGE'
  | 'UNKNOWN';

/** Every error this package throws or emits. `grpcCode` is set when it came from a gRPC status. */
export class ContainerdError extends Error {
  code: ContainerdErrorCode;
  grpcCode: number | undefined;
  constructor(code: ContainerdErrorCode, message: string, grpcCode?: number, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ContainerdError';
    this.code = code;
    this.grpcCode = grpcCode;
  }
}

/** The image or blob does not exist (in this namespace). */
export class NotFoundError extends ContainerdError {
  constructor(message: string, cause?: unknown) {
    super('NOT_FOUND', message, GrpcStatus.NOT_FOUND, cause);
    this.name = 'NotFoundError';
  }
}

/** containerd cannot be reached (socket missing, daemon restarting, connection dropped). */
export class UnavailableError extends ContainerdError {
  constructor(message: string, cause?: unknown) {
    super('UNAVAILABLE', message, GrpcStatus.UNAVAILABLE, cause);
    this.name = 'UnavailableError';
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof ContainerdError && err.code === 'NOT_FOUND';
}

const codeNames: Record<number, ContainerdErrorCode> = {
  [GrpcStatus.CANCELLED]: 'CANCELLED',
  [GrpcStatus.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'DEADLINE_EXCEEDED',
  [GrpcStatus.NOT_FOUND]: 'NOT_FOUND',
  [GrpcStatus.ALREADY_EXISTS]: 'ALREADY_EXISTS',
  [GrpcStatus.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [GrpcStatus.FAILED_PRECONDITION]: 'FAILED_PRECONDITION',
  [GrpcStatus.OUT_OF_RANGE]: 'OUT_OF_RANGE',
  [GrpcStatus.UNIMPLEMENTED]: 'UNIMPLEMENTED',
  [GrpcStatus.UNAVAILABLE]: 'UNAVAILABLE',
};

/** Turns a grpc-js ServiceError (or anything else) into a ContainerdError naming the call. */
export function fromGrpcError(err: unknown, what: string): ContainerdError {
  if (err instanceof ContainerdError) return err;
  const e = err as { code?: unknown; details?: unknown; message?: unknown };
  const grpcCode = typeof e?.code === 'number' ? e.code : undefined;
  const detail =
    typeof e?.details === 'string' && e.details !== ''
      ? e.details
      : typeof e?.message === 'string'
        ? e.message
        : String(err);
  const message = `containerd ${what}: ${detail}`;
  if (grpcCode === GrpcStatus.NOT_FOUND) return new NotFoundError(message, err);
  if (grpcCode === GrpcStatus.UNAVAILABLE) return new UnavailableError(message, err);
  const code = grpcCode === undefined ? 'UNKNOWN' : (codeNames[grpcCode] ?? 'UNKNOWN');
  return new ContainerdError(code, message, grpcCode, err);
}
