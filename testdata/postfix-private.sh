#!/bin/bash
# A private Postfix for qbox's tests, started by proto/testkit/testpeer (StartPostfix)
# and never touching the host's Postfix: `postfix-private.sh DIR` (as root;
# DIR a fresh, empty directory) runs Postfix in a mount namespace of its own,
# with DIR/etc, DIR/spool and DIR/lib bound over /etc/postfix,
# /var/spool/postfix and /var/lib/postfix in that namespace only (Postfix's
# paths are compiled in; `postmulti` would register the instance in the
# host's main.cf). The configuration starts from the package's defaults
# (/usr/share/postfix/main.cf.debian, master.cf.dist), never from the host's
# main.cf, so nothing of the host's setup (relay hosts, milters, content
# filters, secrets) is read or copied:
#   smtpd on 127.0.0.1:0 and qmqpd on 127.0.0.3:0 (the kernel picks the
#     ports; master.cf takes only one service per address:port, hence two
#     addresses; a client's default source is still 127.0.0.1), read back
#     by the caller from /proc/MASTER/net/tcp; inet_interfaces names only
#     127.0.0.1, the one loopback address the host has as an interface
#     address (with 127.0.0.3 there every postfix command exits 1, and
#     silently: the check comes before logging starts);
#   qmqpd_authorized_clients = 127.0.0.1, so 127.0.0.2 is a refused client;
#   mail for any user at example.test delivered to the maildir
#     DIR/mail/inbox/; nothing ever leaves (default and relay transports are
#     error:); the log in DIR/maillog.
# With $QBOX_PF_TLS_DIR set (a directory holding cert.pem, key.pem and
# sasl-password, made by the test with its own CA), five submission
# listeners more, each on an address of its own, all with Cyrus SASL
# (sasldb, PLAIN and LOGIN) for the user $QBOX_PF_SASL_USER, whose password
# is read from that file (never on a command line):
#   127.0.0.4:0 STARTTLS required, AUTH inside TLS (port 587's setup);
#   127.0.0.5:0 TLS from the first byte, AUTH (port 465's);
#   127.0.0.6:0 no STARTTLS, AUTH offered in plain text (STARTTLS stripped);
#   127.0.0.7:0 STARTTLS, no AUTH offered;
#   127.0.0.8:0 as 127.0.0.4, but offering AUTH LOGIN only.
# Each relays only for an authenticated client (the last refuses all).
# Once the instance listens it prints "master PID" on stdout, then waits for
# EOF on stdin: the test process holds the other end, so however that
# process ends, Postfix is stopped and DIR removed.
set -eu
dir=${1:?usage: postfix-private.sh DIR}
case $dir in /*) ;; *) echo "postfix-private: DIR must be absolute: $dir" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "postfix-private: needs root (Postfix starts as root)" >&2; exit 1; }
command -v postconf >/dev/null && [ -d /etc/postfix ] || {
  echo "postfix-private: postfix is not installed (make peers, or apt-get install postfix)" >&2; exit 1; }

if [ "${2:-}" != --inside ]; then
  exec unshare --mount --propagation private bash "$0" "$dir" --inside
fi
# From here on in a mount namespace of our own: refuse to go on otherwise,
# since the mounts below would cover the host's Postfix directories.
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/$PPID/ns/mnt)" ] || {
  echo "postfix-private: not in a private mount namespace; refusing to mount over /etc/postfix" >&2; exit 1; }

etc=$dir/etc spool=$dir/spool lib=$dir/lib mail=$dir/mail
mkdir "$etc" "$spool" "$lib" "$mail"
chmod 755 "$dir" # the postfix user delivers into $mail
chown postfix:postfix "$lib" "$mail"
# What Postfix's own scripts (post-install, postfix-script) read from its
# meta_directory; none of it is site configuration.
for f in dynamicmaps.cf dynamicmaps.cf.d postfix-files postfix-files.d post-install postfix-script \
  makedefs.out main.cf.proto master.cf.proto; do
  [ ! -e "/etc/postfix/$f" ] || cp -a "/etc/postfix/$f" "$etc/"
done
cp /usr/share/postfix/main.cf.debian "$etc/main.cf"
cp /usr/share/postfix/master.cf.dist "$etc/master.cf"
postconf -c "$etc" -e \
  'inet_interfaces = 127.0.0.1' 'inet_protocols = ipv4' 'mydestination =' \
  'myhostname = qbox-test.localdomain' 'mynetworks = 127.0.0.0/8' \
  'virtual_mailbox_domains = example.test' "virtual_mailbox_base = $mail" \
  'virtual_mailbox_maps = static:inbox/' "virtual_uid_maps = static:$(id -u postfix)" \
  "virtual_gid_maps = static:$(id -g postfix)" 'virtual_minimum_uid = 1' \
  'qmqpd_authorized_clients = 127.0.0.1' 'qmqpd_error_delay = 0s' \
  'smtpd_error_sleep_time = 0' 'smtpd_recipient_restrictions = permit_mynetworks, reject' \
  'default_transport = error:qbox test host: no mail leaves' 'relay_transport = error:qbox test host: no mail leaves' \
  'alias_maps =' 'alias_database =' \
  "maillog_file = $dir/maillog" "maillog_file_prefixes = $dir"
# No chroot (it would need a copy of /etc files inside the queue), and only
# our two listeners.
postconf -c "$etc" -F '*/*/chroot = n'
sed -i -E '/^[^#[:space:]]+[[:space:]]+inet[[:space:]]/d' "$etc/master.cf"
printf '127.0.0.1:0 inet n - n - - smtpd\n127.0.0.3:0 inet n - n - - qmqpd\n' >>"$etc/master.cf"

if [ -n "${QBOX_PF_TLS_DIR:-}" ]; then
  user=${QBOX_PF_SASL_USER:?QBOX_PF_SASL_USER}
  install -m 644 "$QBOX_PF_TLS_DIR/cert.pem" "$etc/tls-cert.pem"
  install -m 600 "$QBOX_PF_TLS_DIR/key.pem" "$etc/tls-key.pem"
  mkdir -p "$etc/sasl"
  printf 'pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: /etc/postfix/sasldb2\n' >"$etc/sasl/smtpd.conf"
  saslpasswd2 -p -c -f "$etc/sasldb2" -u qbox-test.localdomain "$user" <"$QBOX_PF_TLS_DIR/sasl-password"
  chown postfix:postfix "$etc/sasldb2"; chmod 600 "$etc/sasldb2"
  postconf -c "$etc" -e 'cyrus_sasl_config_path = /etc/postfix/sasl' 'smtpd_sasl_type = cyrus' \
    'smtpd_sasl_local_domain = qbox-test.localdomain' \
    'smtpd_tls_cert_file = /etc/postfix/tls-cert.pem' 'smtpd_tls_key_file = /etc/postfix/tls-key.pem' \
    'smtpd_tls_mandatory_protocols = >=TLSv1.2'
  sub='-o smtpd_sasl_auth_enable=yes -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject -o smtpd_relay_restrictions=permit_sasl_authenticated,reject'
  printf '%s\n' \
    "127.0.0.4:0 inet n - n - - smtpd -o syslog_name=postfix/submission -o smtpd_tls_security_level=encrypt -o smtpd_tls_auth_only=yes $sub" \
    "127.0.0.5:0 inet n - n - - smtpd -o syslog_name=postfix/submissions -o smtpd_tls_wrappermode=yes $sub" \
    "127.0.0.6:0 inet n - n - - smtpd -o syslog_name=postfix/stripped -o smtpd_tls_security_level=none -o smtpd_tls_auth_only=no $sub" \
    "127.0.0.7:0 inet n - n - - smtpd -o syslog_name=postfix/noauth -o smtpd_tls_security_level=may -o smtpd_recipient_restrictions=reject" \
    "127.0.0.8:0 inet n - n - - smtpd -o syslog_name=postfix/login -o smtpd_tls_security_level=encrypt -o smtpd_tls_auth_only=yes -o smtpd_sasl_mechanism_filter=login $sub" \
    >>"$etc/master.cf"
fi

mount --bind "$etc" /etc/postfix
mount --bind "$spool" /var/spool/postfix
mount --bind "$lib" /var/lib/postfix
[ /etc/postfix -ef "$etc" ] && [ /var/spool/postfix -ef "$spool" ] && [ /var/lib/postfix -ef "$lib" ] || {
  echo "postfix-private: the bind mounts did not take" >&2; exit 1; }
# Postfix's daemons must not hold the caller's pipes (stdin, stdout, and
# stderr, kept as 3 for the ready line).
exec 3>&1 >>"$dir/start.log" 2>&1
postfix post-install create-missing </dev/null 3>&-
# create-missing has just made the queue: skip postfix start's second,
# slower integrity check of it.
touch /var/spool/postfix/quick-start
postfix start </dev/null 3>&-
# From now on, however this script ends (EOF on stdin, a signal, an error),
# Postfix is stopped and DIR removed. `postfix stop` returns once the
# master has exited (its lock is free).
# (set +e: the cleanup must not stop at a first error, such as the sticky
# write error bash reports after a write to a caller that died.)
trap 'set +e; postfix stop >/dev/null 2>&1; rm -rf -- "$dir"' EXIT
trap 'exit 1' HUP INT PIPE TERM
read -r pid </var/spool/postfix/pid/master.pid
echo "master $pid" >&3
exec 3>&-

# Until the test process closes our stdin (or writes to it).
read -r _ || true

