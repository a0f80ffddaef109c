"""RSS of both services against the number of distinct users each has cached (run by
scripts/measure-cache-memory, which starts everything; docs/operations.md quotes the result).

For N users: Register, Login, then a GetItem with the user's token (the data-service verifies
the token, loads the user's credentials from the auth-service, which assumes the data-access
role once, and builds the user's DynamoDB client). RSS and the cache gauges are read after each
batch, so the per-user cost is the slope.

Usage: cache_memory.py AUTH DATA AUTH_METRICS DATA_METRICS AUTH_PID DATA_PID USERS BATCH
Prints one tab-separated line per batch (users so far, both RSS in KiB, both services'
dynagate_cache_entries), then the slope per user.
"""

import os
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generated import load  # noqa: E402

auth_pb2, auth_grpc = load("dynagate/auth/v1/auth.proto")
data_pb2, data_grpc = load("dynagate/data/v1/data.proto")


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def caches(url):
    text = urllib.request.urlopen(f"http://{url}/metrics").read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("dynagate_cache_entries{"):
            name = line.split('cache="')[1].split('"')[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


def retrying(call):
    """`call()`, again after 0.5 s (the services' RetryInfo) while it answers UNAVAILABLE: a
    cold moto can take longer than the data-service's GetCredentials timeout at first."""
    for attempt in range(10):
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == 9:
                raise
            time.sleep(0.5)


def one_user(auth, data, prefix, i):
    name = f"{prefix}-{i}"
    password = "correct horse battery staple"
    retrying(lambda: auth.Register(auth_pb2.RegisterRequest(username=name, password=password), timeout=30))
    login = retrying(lambda: auth.Login(auth_pb2.LoginRequest(username=name, password=password), timeout=30))
    bearer = [("authorization", f"Bearer {login.access_token}")]
    try:
        retrying(lambda: data.GetItem(data_pb2.GetItemRequest(key="k"), metadata=bearer, timeout=30))
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise


def main():
    auth_addr, data_addr, auth_m, data_m, auth_pid, data_pid, users, batch = sys.argv[1:]
    users, batch = int(users), int(batch)
    auth = auth_grpc.AuthServiceStub(grpc.insecure_channel(auth_addr))
    data = data_grpc.DataServiceStub(grpc.insecure_channel(data_addr))
    prefix = uuid.uuid4().hex[:8]
    print("users\tauth_rss_kib\tdata_rss_kib\tauth_caches\tdata_caches", flush=True)
    done = 0
    first = None
    with ThreadPoolExecutor(8) as pool:
        # Warm-up: the first users build lazily made state (zxcvbn lists, connection pools).
        list(pool.map(lambda i: one_user(auth, data, prefix + "w", i), range(50)))
        time.sleep(1)
        first = (rss_kib(auth_pid), rss_kib(data_pid))
        print(f"0\t{first[0]}\t{first[1]}\t{caches(auth_m)}\t{caches(data_m)}", flush=True)
        while done < users:
            list(pool.map(lambda i: one_user(auth, data, prefix, i), range(done, done + batch)))
            done += batch
            time.sleep(1)
            print(f"{done}\t{rss_kib(auth_pid)}\t{rss_kib(data_pid)}\t{caches(auth_m)}\t{caches(data_m)}", flush=True)
    auth_slope = (rss_kib(auth_pid) - first[0]) / users
    data_slope = (rss_kib(data_pid) - first[1]) / users
    print(f"per user: auth-service {auth_slope:.2f} KiB, data-service {data_slope:.2f} KiB")


if __name__ == "__main__":
    main()
