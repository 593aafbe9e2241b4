#!/bin/bash
# Installs (when missing) the real peers qbox's tests use: Postfix,
# mailfront, ucspi-tcp, swaks, systemd-socket-activate, Cyrus SASL's
# sasldb tools and plugins (Postfix's SMTP AUTH), stunnel4 and socat (TLS
# wrappers) from Debian's packages, with apt-get; needs root only when something is missing.
# Idempotent. Beyond installing packages it configures and starts nothing:
# the tests start their own private Postfix instances
# (testdata/postfix-private.sh, from proto/testkit/testpeer) and the other peers on
# 127.0.0.1:0, and never touch the host's Postfix or its configuration.
# Debian's postfix conflicts with every other MTA, so it is not installed
# over one: that would remove the host's mail system.
set -eu
need=()
for p in postfix:qmqp-source mailfront:qmtpfront-echo ucspi-tcp:tcpserver swaks:swaks systemd:systemd-socket-activate \
  sasl2-bin:saslpasswd2 stunnel4:stunnel4 socat:socat; do
  pkg=${p%%:*} prog=${p#*:}
  command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || need+=("$pkg")
done
# The PLAIN and LOGIN plugins have no program to look for.
ls /usr/lib/*/sasl2/libplain.so* >/dev/null 2>&1 && ls /usr/lib/*/sasl2/liblogin.so* >/dev/null 2>&1 || need+=(libsasl2-modules)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "peers: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  if [[ " ${need[*]} " == *" postfix "* ]] && [ -e /usr/sbin/sendmail ]; then
    echo "peers: another MTA provides /usr/sbin/sendmail and installing postfix would replace it;" \
      "install postfix yourself if that is what you want, or run the tests in a container" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Install Postfix without its configuration dialog and without a
  # main.cf: on a machine that had no Postfix, the package stays
  # unconfigured and stopped (the tests' instances bring their own).
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "peers: postfix, mailfront, ucspi-tcp, swaks, systemd-socket-activate, sasl2-bin, libsasl2-modules, stunnel4 and socat installed; nothing configured or started"
