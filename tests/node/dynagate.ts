// A Dynagate client for TypeScript on Node: @grpc/grpc-js with the messages loaded from proto/
// at run time by @grpc/proto-loader, typed by the interfaces proto-loader-gen-types generates
// from the same protos (into target/node/types, imported here as `generated/…`), promise-
// returning calls, and the rich error details (google.rpc.Status in the
// `grpc-status-details-bin` trailer) decoded with the same loader.
//
// The generated imports are types only: they vanish from the compiled JavaScript, so only
// grpc-js and proto-loader are needed at run time. A proto change the code does not follow
// (a renamed field, a removed method) fails `tsc`.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as AuthProto } from 'generated/auth';
import type { ProtoGrpcType as DataProto } from 'generated/data';
import type { ProtoGrpcType as ErrorDetailsProto } from 'generated/error_details';
import type { ProtoGrpcType as StatusProto } from 'generated/status';
import type { AuthServiceClient } from 'generated/dynagate/auth/v1/AuthService';
import type { DataServiceClient } from 'generated/dynagate/data/v1/DataService';
import type { Any__Output } from 'generated/google/protobuf/Any';

export { status } from '@grpc/grpc-js';
export type { ServiceError } from '@grpc/grpc-js';

const root = workspaceRoot(__dirname);
// The same options as proto-loader-gen-types is given: the generated types describe what loads.
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
    includeDirs: [path.join(root, 'proto'), path.join(root, 'tests', 'node', 'proto')],
    keepCase: true, // field names as in the .proto files: access_token, next_page_token
    longs: String, // uint64 versions as decimal strings: no precision lost past 2^53
    enums: String,
    defaults: true, // unset fields read as their zero value, as in every other language
    oneofs: true, // a Value says which kind it holds: { kind: 'string_value', string_value: 'hi' }
  },
);
const loaded = grpc.loadPackageDefinition(definitions) as unknown as AuthProto &
  DataProto &
  StatusProto &
  ErrorDetailsProto;

/** The rich error details we decode, by their full protobuf name. */
const detailTypes = {
  'google.rpc.BadRequest': loaded.google.rpc.BadRequest,
  'google.rpc.ErrorInfo': loaded.google.rpc.ErrorInfo,
  'google.rpc.RetryInfo': loaded.google.rpc.RetryInfo,
};
export type DetailType = keyof typeof detailTypes;
export type Detail<T extends DetailType> = ReturnType<(typeof detailTypes)[T]['deserialize']>;

/** A google.rpc.Status with the details we know decoded; others keep their google.protobuf.Any. */
export interface RichStatus {
  code: number;
  message: string;
  details: Array<{ type: string; value: Detail<DetailType> | Any__Output }>;
}

// A generated client declares every unary method four times (with and without metadata and
// call options) and again in lowerCamelCase; the last overload, `(argument, callback)`, is the
// one conditional types see, and it names both the request and the response type.
type UnaryMethod<Request, Response> = (
  argument: Request,
  callback: grpc.requestCallback<Response>,
) => grpc.ClientUnaryCall;
/** The names of a client's unary methods (PascalCase, as in the .proto). */
export type UnaryName<Client> = {
  [Name in keyof Client & string]: Name extends Capitalize<Name>
    ? Client[Name] extends UnaryMethod<infer _Request, infer _Response>
      ? Name
      : never
    : never;
}[keyof Client & string];
export type RequestOf<Method> = Method extends UnaryMethod<infer Request, unknown> ? Request : never;
export type ResponseOf<Method> = Method extends UnaryMethod<never, infer Response> ? Response : never;

/**
 * Promise-returning calls on a generated client, checked against the contract:
 * `await call(auth, 'Login', { username, password })` resolves to a `LoginResponse__Output`.
 */
export function call<Client extends grpc.Client, Name extends UnaryName<Client>>(
  client: Client,
  method: Name,
  request: RequestOf<Client[Name]>,
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<ResponseOf<Client[Name]>> {
  type Response = ResponseOf<Client[Name]>;
  const unary = client[method] as (
    argument: RequestOf<Client[Name]>,
    metadata: grpc.Metadata,
    callback: grpc.requestCallback<Response>,
  ) => grpc.ClientUnaryCall;
  return new Promise((resolve, reject) => {
    unary.call(client, request, metadata, (error, response) => {
      if (error) {
        reject(error);
      } else if (response === undefined) {
        reject(new Error(`${method}: no error and no response`));
      } else {
        resolve(response);
      }
    });
  });
}

/** The metadata every data call and the bearer-only auth calls carry. */
export function bearer(accessToken: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${accessToken}`);
  return metadata;
}

/** Clients of both services over plaintext (what the local stack serves). */
export function connect(
  authAddress: string,
  dataAddress: string,
): { auth: AuthServiceClient; data: DataServiceClient } {
  const credentials = grpc.credentials.createInsecure();
  return {
    auth: new loaded.dynagate.auth.v1.AuthService(authAddress, credentials),
    data: new loaded.dynagate.data.v1.DataService(dataAddress, credentials),
  };
}

/**
 * Decodes the google.rpc.Status a failed call carries in its `grpc-status-details-bin`
 * trailer, with each detail (a google.protobuf.Any) unpacked by its type URL; null when the
 * error has none.
 */
export function richStatus(error: grpc.ServiceError): RichStatus | null {
  const [bytes] = error.metadata?.get('grpc-status-details-bin') ?? [];
  if (!(bytes instanceof Buffer)) {
    return null;
  }
  const status = loaded.google.rpc.Status.deserialize(bytes);
  return {
    code: status.code,
    message: status.message,
    details: status.details.map((any) => {
      const type = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
      return isDetailType(type)
        ? { type, value: detailTypes[type].deserialize(any.value) }
        : { type, value: any };
    }),
  };
}

/** The first detail of `type` (e.g. 'google.rpc.BadRequest') in a failed call, or undefined. */
export function detail<T extends DetailType>(error: grpc.ServiceError, type: T): Detail<T> | undefined {
  const found = richStatus(error)?.details.find((d) => d.type === type);
  return found?.value as Detail<T> | undefined;
}

function isDetailType(type: string): type is DetailType {
  return Object.hasOwn(detailTypes, type);
}

/** The checkout this file lives in, found from the source or the compiled copy alike. */
function workspaceRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'proto', 'dynagate'))) {
      return dir;
    }
    if (dir === path.dirname(dir)) {
      throw new Error(`no proto/dynagate in any directory above ${from}`);
    }
  }
}
