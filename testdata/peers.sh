#!/bin/bash
# Installs (when missing) and starts the real peers qbox's tests use:
# Postfix, mailfront, ucspi-tcp, swaks and systemd-socket-activate from Debian's packages. Needs root
# when anything is missing. Idempotent.
set -eu
need=()
for p in postfix:qmqp-source mailfront:qmtpfront-echo ucspi-tcp:tcpserver swaks:swaks systemd:systemd-socket-activate; do
  pkg=${p%%:*} prog=${p#*:}
  command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "peers: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Install Postfix without its configuration dialog; postfix-up.sh writes the config.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
flock /tmp/qbox-postfix.lock bash "$(dirname "$0")/postfix-up.sh"
echo "peers: Postfix qmqpd on 127.0.0.1:1628, smtpd on 127.0.0.1:25; mailfront, tcpserver and swaks installed"
