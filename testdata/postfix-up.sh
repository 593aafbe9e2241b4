#!/bin/bash
# Makes the machine's Postfix a loopback-only peer for qbox's tests: qmqpd on
# 127.0.0.1:1628 (only 127.0.0.1 authorized, so 127.0.0.2 is a refused
# client), smtpd on 127.0.0.1:25, mail for example.test delivered to the
# maildir /tmp/qbox-postfix/mail/inbox/, and nothing ever leaves the host.
# Idempotent; needs root and the postfix package.
set -eu
base=/tmp/qbox-postfix
command -v postconf >/dev/null || { echo "postfix-up: postfix is not installed (apt-get install postfix)" >&2; exit 1; }
[ -f /etc/postfix/main.cf ] || cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
mkdir -p "$base/mail"
chown postfix:postfix "$base/mail"
# newaliases needs /etc/aliases; a fresh container may lack it.
[ -f /etc/aliases ] || echo 'postmaster: root' > /etc/aliases
postconf -e \
  'inet_interfaces = loopback-only' 'inet_protocols = ipv4' 'mydestination =' \
  'myhostname = qbox-test.localdomain' 'mynetworks = 127.0.0.0/8' \
  'virtual_mailbox_domains = example.test' "virtual_mailbox_base = $base/mail" \
  'virtual_mailbox_maps = static:inbox/' "virtual_uid_maps = static:$(id -u postfix)" \
  "virtual_gid_maps = static:$(id -g postfix)" 'virtual_minimum_uid = 1' \
  'qmqpd_authorized_clients = 127.0.0.1' 'qmqpd_error_delay = 0s' \
  'smtpd_error_sleep_time = 0' 'smtpd_recipient_restrictions = permit_mynetworks, reject' \
  'default_transport = error:qbox test host: no mail leaves' 'relay_transport = error:qbox test host: no mail leaves' \
  'maillog_file = /var/log/postfix-qbox.log' 'alias_maps = hash:/etc/aliases' 'alias_database = hash:/etc/aliases'
grep -q '^1628 ' /etc/postfix/master.cf || echo '1628 inet n - n - - qmqpd' >> /etc/postfix/master.cf
newaliases
if postfix status >/dev/null 2>&1; then postfix reload >/dev/null 2>&1; else postfix start >/dev/null 2>&1; fi
# Wait for both listeners.
i=0
while [ $i -lt 100 ]; do
  if (echo > /dev/tcp/127.0.0.1/1628) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/25) 2>/dev/null; then exit 0; fi
  i=$((i+1)); sleep 0.1
done
echo "postfix-up: Postfix did not start listening on 127.0.0.1:1628 and :25" >&2
exit 1
