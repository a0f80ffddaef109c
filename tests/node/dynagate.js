// @ts-check
// A Dynagate client for Node: @grpc/grpc-js with the messages loaded from proto/ at run time by
// @grpc/proto-loader (no code generation), promise-returning calls, and the rich error details
// (google.rpc.Status in the `grpc-status-details-bin` trailer) decoded with the same loader.
//
// Plain JavaScript with JSDoc types rather than TypeScript: Node 20, which our machines run,
// cannot strip types (that came with Node 22.6), and a compile step for one test is not worth
// it. `// @ts-check` lets an editor type-check it anyway.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const definitions = protoLoader.loadSync(
  [
    'dynagate/auth/v1/auth.proto',
    'dynagate/data/v1/data.proto',
    'google/rpc/status.proto',
    'google/rpc/error_details.proto',
  ],
  {
    // proto/ holds our API. google/rpc/{status,error_details}.proto are vendored in
    // tests/node/proto, copied unchanged from googleapis-common-protos 1.76.0 (Apache-2.0):
    // no npm package we install ships them. The google/protobuf well-known types come with
    // protobufjs.
    includeDirs: [path.join(__dirname, '..', '..', 'proto'), path.join(__dirname, 'proto')],
    keepCase: true, // field names as in the .proto files: access_token, next_page_token
    longs: String, // uint64 versions as decimal strings: no precision lost past 2^53
    enums: String,
    defaults: true, // unset fields read as their zero value, as in every other language
    oneofs: true, // a Value says which kind it holds: { kind: 'string_value', string_value: 'hi' }
  },
);
const loaded = /** @type {any} */ (grpc.loadPackageDefinition(definitions));

/**
 * @typedef {{ field: string, description: string }} FieldViolation
 * @typedef {{ reason: string, domain: string, metadata: Record<string, string> }} ErrorInfo
 * @typedef {{ retry_delay: { seconds: string, nanos: number } }} RetryInfo
 * @typedef {{ code: number, message: string, details: Array<{ type: string, value: any }> }} RichStatus
 */

/**
 * Promise-returning calls on a grpc-js client: `await call(client, 'Login', request)`.
 * @param {grpc.Client} client
 * @param {string} method
 * @param {object} request
 * @param {grpc.Metadata} [metadata]
 * @returns {Promise<any>}
 */
function call(client, method, request, metadata = new grpc.Metadata()) {
  const unary = /** @type {any} */ (client)[method].bind(client);
  return new Promise((resolve, reject) => {
    unary(request, metadata, (/** @type {grpc.ServiceError | null} */ error, /** @type {any} */ response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

/**
 * The metadata every data call and the bearer-only auth calls carry.
 * @param {string} accessToken
 */
function bearer(accessToken) {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${accessToken}`);
  return metadata;
}

/**
 * Clients of both services over plaintext (what the local stack serves).
 * @param {string} authAddress host:port of the auth-service
 * @param {string} dataAddress host:port of the data-service
 */
function connect(authAddress, dataAddress) {
  const credentials = grpc.credentials.createInsecure();
  return {
    auth: new loaded.dynagate.auth.v1.AuthService(authAddress, credentials),
    data: new loaded.dynagate.data.v1.DataService(dataAddress, credentials),
  };
}

/**
 * Decodes the google.rpc.Status a failed call carries in its `grpc-status-details-bin`
 * trailer, with each detail (a google.protobuf.Any) unpacked by its type URL; null when the
 * error has none. Details of types we did not load keep their raw bytes.
 * @param {grpc.ServiceError} error
 * @returns {RichStatus | null}
 */
function richStatus(error) {
  const [bytes] = error.metadata?.get('grpc-status-details-bin') ?? [];
  if (!(bytes instanceof Buffer)) {
    return null;
  }
  const status = messageType('google.rpc.Status').deserialize(bytes);
  return {
    code: status.code,
    message: status.message,
    details: status.details.map((/** @type {{ type_url: string, value: Buffer }} */ any) => {
      const type = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
      const known = /** @type {any} */ (definitions)[type];
      return { type, value: known ? known.deserialize(any.value) : any.value };
    }),
  };
}

/**
 * The first detail of `type` (e.g. 'google.rpc.BadRequest') in a failed call, or undefined.
 * @param {grpc.ServiceError} error
 * @param {string} type
 */
function detail(error, type) {
  return richStatus(error)?.details.find((d) => d.type === type)?.value;
}

/** @param {string} name */
function messageType(name) {
  return /** @type {protoLoader.MessageTypeDefinition} */ (definitions[name]);
}

module.exports = { bearer, call, connect, detail, richStatus, status: grpc.status };
