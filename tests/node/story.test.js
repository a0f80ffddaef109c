// @ts-check
// The whole Dynagate story from Node, on both services, run by node's own test runner:
// register, log in, put, get, query a page at a time, update with versions (a stale version
// fails with the current one in an ErrorInfo), delete, refresh, log out, and rich errors
// decoded as google.rpc types.
//
// Needs running services: tests/tests/clients.rs starts them and runs
//   NODE_PATH=.local/npm/node_modules DYNAGATE_AUTH_ADDR=host:port DYNAGATE_DATA_ADDR=host:port \
//     node --test tests/node/story.test.js
'use strict';

const assert = require('node:assert/strict');
const { randomUUID } = require('node:crypto');
const { test } = require('node:test');

const { bearer, call, connect, detail, status } = require('./dynagate');

const authAddress = required('DYNAGATE_AUTH_ADDR');
const dataAddress = required('DYNAGATE_DATA_ADDR');

/** @param {string} name */
function required(name) {
  const value = process.env[name];
  assert.ok(value, `${name} must name a running service (host:port)`);
  return value;
}

/** @param {string} text */
const string = (text) => ({ string_value: text });

/**
 * Awaits `promise`, which must fail with `code`; returns the error.
 * @param {Promise<unknown>} promise
 * @param {number} code
 * @returns {Promise<import('@grpc/grpc-js').ServiceError>}
 */
async function failure(promise, code) {
  try {
    await promise;
  } catch (error) {
    const failed = /** @type {import('@grpc/grpc-js').ServiceError} */ (error);
    assert.equal(failed.code, code, `expected code ${code}, got ${failed.code}: ${failed.details}`);
    return failed;
  }
  assert.fail(`expected code ${code}, the call succeeded`);
}

test('the whole story on both services', async (t) => {
  const { auth, data } = connect(authAddress, dataAddress);
  t.after(() => {
    auth.close();
    data.close();
  });
  const username = `node-${randomUUID().slice(0, 12)}`;
  const password = `node-${randomUUID()}`;
  /** @type {any} */
  let login;
  /** @type {import('@grpc/grpc-js').Metadata} */
  let token;

  await t.test('a bad registration names every broken field in a BadRequest', async () => {
    const register = call(auth, 'Register', { username: 'x', password: 'short' });
    const error = await failure(register, status.INVALID_ARGUMENT);
    const badRequest = detail(error, 'google.rpc.BadRequest');
    assert.deepEqual(
      badRequest.field_violations.map((/** @type {{ field: string }} */ v) => v.field),
      ['username', 'password'],
    );
  });

  await t.test('register and log in', async () => {
    const { user_id } = await call(auth, 'Register', { username, password });
    login = await call(auth, 'Login', { username, password });
    assert.equal(login.user_id, user_id);
    assert.match(login.access_token, /^v4\.public\./);
    token = bearer(login.access_token);
  });

  await t.test('put and get', async () => {
    const put = await call(
      data,
      'PutItem',
      {
        key: 'notes/1',
        attributes: { title: string('hello'), stars: { number_value: '5' } },
        if_absent: true,
      },
      token,
    );
    assert.equal(put.item.version, '1', 'uint64 is a string with longs: String');
    const { item } = await call(data, 'GetItem', { key: 'notes/1' }, token);
    assert.equal(item.attributes.title.string_value, 'hello');
    assert.equal(item.attributes.stars.kind, 'number_value');
    assert.equal(item.attributes.stars.number_value, '5');
  });

  await t.test('query a page at a time', async () => {
    for (const n of [2, 3, 4, 5]) {
      await call(data, 'PutItem', { key: `notes/${n}`, attributes: { title: string(`#${n}`) } }, token);
    }
    const pages = [];
    let page_token = '';
    do {
      const page = await call(data, 'QueryItems', { key_prefix: 'notes/', limit: 2, page_token }, token);
      pages.push(page.items.map((/** @type {{ key: string }} */ item) => item.key));
      page_token = page.next_page_token;
    } while (page_token);
    assert.deepEqual(pages, [['notes/1', 'notes/2'], ['notes/3', 'notes/4'], ['notes/5']]);
  });

  await t.test('a stale version fails with the current one in an ErrorInfo', async () => {
    const { item } = await call(
      data,
      'UpdateItem',
      { key: 'notes/1', set: { title: string('hello again') }, remove: ['stars'], expected_version: '1' },
      token,
    );
    assert.equal(item.version, '2');
    assert.equal(item.attributes.stars, undefined);

    const lost = { key: 'notes/1', set: { title: string('lost') }, expected_version: '1' };
    const error = await failure(call(data, 'UpdateItem', lost, token), status.FAILED_PRECONDITION);
    assert.deepEqual(detail(error, 'google.rpc.ErrorInfo'), {
      reason: 'VERSION_MISMATCH',
      domain: 'dynagate.dev',
      metadata: { current_version: '2' },
    });
  });

  await t.test('delete at the version we know', async () => {
    const { item } = await call(data, 'DeleteItem', { key: 'notes/1', expected_version: '2' }, token);
    assert.equal(item.key, 'notes/1');
    assert.equal(item.version, '2');
    await failure(call(data, 'GetItem', { key: 'notes/1' }, token), status.NOT_FOUND);
  });

  await t.test('refresh, then log out, which ends the session', async () => {
    const refreshed = await call(auth, 'Refresh', { refresh_token: login.refresh_token });
    assert.notEqual(refreshed.refresh_token, login.refresh_token);
    await call(data, 'GetItem', { key: 'notes/2' }, bearer(refreshed.access_token));

    await call(auth, 'Logout', { refresh_token: refreshed.refresh_token });
    const again = call(auth, 'Refresh', { refresh_token: refreshed.refresh_token });
    await failure(again, status.UNAUTHENTICATED);
  });
});
