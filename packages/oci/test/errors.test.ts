import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errorBody, errorStatus, OciError, type OciErrorCode } from '../src/index.ts';

test('default status per code', () => {
  const want: Record<OciErrorCode, number> = {
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
  for (const [code, status] of Object.entries(want) as [OciErrorCode, number][]) {
    assert.equal(new OciError(code, 'x').status, status, code);
    assert.equal(errorStatus(code), status, code);
  }
});

test('OciError carries code, status override, detail and serialises to an OCI body', () => {
  const err = new OciError('BLOB_UNKNOWN', 'no such blob', 410, { attempts: 3 });
  assert.ok(err instanceof Error);
  assert.ok(err instanceof OciError);
  assert.equal(err.name, 'OciError');
  assert.equal(err.message, 'no such blob');
  assert.equal(err.status, 410);
  assert.deepEqual(err.detail, { attempts: 3 });
  assert.deepEqual(err.toJSON(), {
    errors: [{ code: 'BLOB_UNKNOWN', message: 'no such blob', detail: { attempts: 3 } }],
  });
  assert.deepEqual(JSON.parse(JSON.stringify(err)), err.toJSON());
});

test('errorBody leaves out an undefined detail', () => {
  assert.deepEqual(errorBody('NAME_UNKNOWN', 'gone'), {
    errors: [{ code: 'NAME_UNKNOWN', message: 'gone' }],
  });
  assert.equal('detail' in errorBody('DENIED', 'no').errors[0]!, false);
  assert.equal('detail' in new OciError('DENIED', 'no').toJSON().errors[0]!, false);
  assert.deepEqual(errorBody('DENIED', 'no', null).errors[0], {
    code: 'DENIED',
    message: 'no',
    detail: null,
  });
});
