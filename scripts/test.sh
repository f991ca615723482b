#!/usr/bin/env bash
# Runs the test suite. The integration tests start their own redis-server on free ports, so
# the binary must be installed; this installs it (and openssl, which the TLS tests make their
# certificates with) from the OS packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests pause and resume their servers with kill(1) (procps on Debian).
if [ ! -x /bin/kill ] && [ ! -x /usr/bin/kill ] && command -v apt-get >/dev/null 2>&1; then
  echo "kill(1) is missing; installing procps" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo apt-get update -qq && sudo apt-get install -y -qq procps >/dev/null
  else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq procps >/dev/null; fi
fi

# install_package <apt name> <dnf name> <apk name> <brew name>
install_package() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    $sudo dnf install -y -q "$2"
  elif command -v apk >/dev/null 2>&1; then
    $sudo apk add --quiet "$3"
  elif command -v brew >/dev/null 2>&1; then
    brew install "$4"
  else
    echo "no known package manager: install $1 yourself and run this again" >&2
    exit 1
  fi
}

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is missing; installing it from the OS packages" >&2
  install_package redis-server redis redis redis
fi

# The TLS tests make their certificates with the openssl command line tool.
if ! command -v openssl >/dev/null 2>&1; then
  echo "openssl is missing; installing it from the OS packages" >&2
  install_package openssl openssl openssl openssl
fi

exec cargo test --all-features "$@"
