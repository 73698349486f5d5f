#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ answer on 127.0.0.1 (start the local ones if they are down).
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
mq_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! pg_up; then
  echo "PostgreSQL is down: starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! mq_up; then
  echo "RabbitMQ is down: starting it"
  rabbitmq-server -detached || true
fi
for _ in $(seq 1 60); do
  if pg_up && mq_up && rabbitmqctl -q status >/dev/null 2>&1; then
    echo "PostgreSQL and RabbitMQ are up"
    exit 0
  fi
  sleep 1
done
echo "PostgreSQL or RabbitMQ did not come up in 60 s" >&2
exit 1
