#!/bin/sh
# Healthy when the server answers on its socket (--connect) with InnoDB ready (--innodb_initialized);
# the same command line as the official image's healthcheck.sh, as docker-compose.yml calls it.
set -eu
mariadb --protocol=socket -uroot -N -B -e \
  "SELECT 1 FROM information_schema.ENGINES WHERE ENGINE = 'InnoDB' AND SUPPORT IN ('YES', 'DEFAULT')" \
  2>/dev/null | grep -qx 1
