#!/bin/sh
# First start: create the system tables, then the application database and user from the
# environment (a server on a private socket does it, so the healthcheck cannot pass early).
# Every start: exec mariadbd as user mysql, so it gets `docker stop`'s SIGTERM.
set -eu
datadir=/var/lib/mysql
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld "$datadir"

sql_string() {  # a value as an SQL string literal
  printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"
}
sql_name() {
  printf '`%s`' "$(printf '%s' "$1" | sed -e 's/`/``/g')"
}

if [ ! -d "$datadir/mysql" ]; then
  : "${MARIADB_DATABASE:?set MARIADB_DATABASE}" "${MARIADB_USER:?set MARIADB_USER}" "${MARIADB_PASSWORD:?set MARIADB_PASSWORD}"
  echo "entrypoint: initialising $datadir"
  mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db --auth-root-authentication-method=socket >/dev/null
  init_socket=/run/mysqld/init.sock
  mariadbd --user=mysql --datadir="$datadir" --skip-networking --socket="$init_socket" &
  pid=$!
  i=0
  until mariadb --protocol=socket --socket="$init_socket" -uroot -e 'SELECT 1' >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then echo "entrypoint: the server did not start" >&2; exit 1; fi
    sleep 1
  done
  {
    echo "CREATE DATABASE IF NOT EXISTS $(sql_name "$MARIADB_DATABASE") CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    echo "CREATE USER IF NOT EXISTS $(sql_string "$MARIADB_USER")@'%' IDENTIFIED BY $(sql_string "$MARIADB_PASSWORD");"
    echo "GRANT ALL PRIVILEGES ON $(sql_name "$MARIADB_DATABASE").* TO $(sql_string "$MARIADB_USER")@'%';"
    if [ -n "${MARIADB_ROOT_PASSWORD:-}" ]; then
      # root keeps socket login inside the container and gains a password for TCP logins
      echo "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD($(sql_string "$MARIADB_ROOT_PASSWORD"));"
    fi
    echo "FLUSH PRIVILEGES;"
  } | mariadb --protocol=socket --socket="$init_socket" -uroot
  kill -TERM "$pid"
  wait "$pid" || true
  echo "entrypoint: created database $MARIADB_DATABASE and user $MARIADB_USER"
fi

if [ "${1:-}" = mariadbd ]; then
  shift
  exec mariadbd --user=mysql --datadir="$datadir" "$@"
fi
exec "$@"
