#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are up; start them if they are down.
# Tests that need them fail loudly (never skip) if they still cannot connect.
set -u
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || echo "services: could not start PostgreSQL"
fi
if ! redis_up; then
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || echo "services: could not start Redis"
fi
for _ in $(seq 1 30); do pg_up && redis_up && break; sleep 0.5; done
pg_up && echo "services: PostgreSQL up" || echo "services: PostgreSQL DOWN at 127.0.0.1:5432 (tests that need it will fail)"
redis_up && echo "services: Redis up" || echo "services: Redis DOWN at 127.0.0.1:6379 (tests that need it will fail)"
exit 0
