// The whole Dynagate story from TypeScript, on both services, run by node's own test runner:
// register, log in, put, get, query a page at a time, update with versions (a stale version
// fails with the current one in an ErrorInfo), delete, refresh, log out, and rich errors
// decoded as google.rpc types. Every request and response is typed from the protos.
//
// Needs running services: tests/tests/clients.rs generates the types, compiles this with tsc
// (tests/node/tsconfig.json, into target/node/build), starts the services and runs
//   NODE_PATH=.local/npm/node_modules DYNAGATE_AUTH_ADDR=host:port DYNAGATE_DATA_ADDR=host:port \
//     node --test target/node/build/tests/node/story.test.js

import * as assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import type { Metadata } from '@grpc/grpc-js';
import type { LoginResponse__Output } from 'generated/dynagate/auth/v1/LoginResponse';
import type { Value } from 'generated/dynagate/data/v1/Value';
import { bearer, call, connect, detail, type ServiceError, status } from './dynagate';

const authAddress = required('DYNAGATE_AUTH_ADDR');
const dataAddress = required('DYNAGATE_DATA_ADDR');

function required(name: string): string {
  const value = process.env[name];
  assert.ok(value, `${name} must name a running service (host:port)`);
  return value;
}

const string = (text: string): Value => ({ string_value: text });

/** Awaits `promise`, which must fail with `code`; returns the error. */
async function failure(promise: Promise<unknown>, code: status): Promise<ServiceError> {
  try {
    await promise;
  } catch (error) {
    const failed = error as ServiceError;
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
  let login: LoginResponse__Output | undefined;
  let token: Metadata | undefined;
  const signedIn = (): Metadata => {
    assert.ok(token, 'logged in');
    return token;
  };

  await t.test('a bad registration names every broken field in a BadRequest', async () => {
    const register = call(auth, 'Register', { username: 'x', password: 'short' });
    const error = await failure(register, status.INVALID_ARGUMENT);
    const badRequest = detail(error, 'google.rpc.BadRequest');
    assert.deepEqual(
      badRequest?.field_violations.map((violation) => violation.field),
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
      signedIn(),
    );
    assert.equal(put.item?.version, '1', 'uint64 is a string with longs: String');
    const { item } = await call(data, 'GetItem', { key: 'notes/1' }, signedIn());
    assert.ok(item);
    assert.equal(item.attributes.title?.string_value, 'hello');
    assert.equal(item.attributes.stars?.kind, 'number_value');
    assert.equal(item.attributes.stars?.number_value, '5');
  });

  await t.test('query a page at a time', async () => {
    for (const n of [2, 3, 4, 5]) {
      const note = { key: `notes/${n}`, attributes: { title: string(`#${n}`) } };
      await call(data, 'PutItem', note, signedIn());
    }
    const pages: string[][] = [];
    let page_token = '';
    do {
      const page = await call(data, 'QueryItems', { key_prefix: 'notes/', limit: 2, page_token }, signedIn());
      pages.push(page.items.map((item) => item.key));
      page_token = page.next_page_token;
    } while (page_token);
    assert.deepEqual(pages, [['notes/1', 'notes/2'], ['notes/3', 'notes/4'], ['notes/5']]);
  });

  await t.test('a stale version fails with the current one in an ErrorInfo', async () => {
    const { item } = await call(
      data,
      'UpdateItem',
      { key: 'notes/1', set: { title: string('hello again') }, remove: ['stars'], expected_version: '1' },
      signedIn(),
    );
    assert.ok(item);
    assert.equal(item.version, '2');
    assert.equal(item.attributes.stars, undefined);

    const lost = { key: 'notes/1', set: { title: string('lost') }, expected_version: '1' };
    const error = await failure(call(data, 'UpdateItem', lost, signedIn()), status.FAILED_PRECONDITION);
    assert.deepEqual(detail(error, 'google.rpc.ErrorInfo'), {
      reason: 'VERSION_MISMATCH',
      domain: 'dynagate.dev',
      metadata: { current_version: '2' },
    });
  });

  await t.test('delete at the version we know', async () => {
    const { item } = await call(data, 'DeleteItem', { key: 'notes/1', expected_version: '2' }, signedIn());
    assert.equal(item?.key, 'notes/1');
    assert.equal(item?.version, '2');
    await failure(call(data, 'GetItem', { key: 'notes/1' }, signedIn()), status.NOT_FOUND);
  });

  await t.test('refresh, then log out, which ends the session', async () => {
    assert.ok(login, 'logged in');
    const refreshed = await call(auth, 'Refresh', { refresh_token: login.refresh_token });
    assert.notEqual(refreshed.refresh_token, login.refresh_token);
    await call(data, 'GetItem', { key: 'notes/2' }, bearer(refreshed.access_token));

    await call(auth, 'Logout', { refresh_token: refreshed.refresh_token });
    const again = call(auth, 'Refresh', { refresh_token: refreshed.refresh_token });
    await failure(again, status.UNAUTHENTICATED);
  });
});
