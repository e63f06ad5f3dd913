#!/usr/bin/env bash
# Install (idempotently) and run, on loopback, the real services that Switchboard's
# tests and demo talk to: redis-server, Dovecot IMAP, Postfix (SMTP delivering into
# Dovecot's Maildirs), a Synapse homeserver and a DNS server (dnsmasq) that publishes the
# test domains' SPF, DKIM and DMARC records.
#
#   scripts/services.sh up      install what is missing, start what is not running, wait until ready
#   scripts/services.sh down    stop everything this script started
#   scripts/services.sh restart NAME | stop NAME   one service (fault tests; `up` starts it again)
#   scripts/services.sh status  say what is running
#   scripts/services.sh env     print the settings file path (source it to reach the services)
#
# All state lives under $SB_STATE_DIR (default /tmp/switchboard-services). Ports are
# configurable: SB_REDIS_PORT, SB_IMAP_PORT, SB_SMTP_PORT, SB_SYNAPSE_PORT.
set -euo pipefail

STATE=${SB_STATE_DIR:-/tmp/switchboard-services}
REDIS_PORT=${SB_REDIS_PORT:-16379}
IMAP_PORT=${SB_IMAP_PORT:-10143}
SMTP_PORT=${SB_SMTP_PORT:-10025}
SYNAPSE_PORT=${SB_SYNAPSE_PORT:-18008}
IMAPS_PORT=${SB_IMAPS_PORT:-10993}
SMTPS_PORT=${SB_SMTPS_PORT:-10465}
SMTP_PLAIN_PORT=${SB_SMTP_PLAIN_PORT:-10026}
# Submission with SASL through Dovecot (passwords, or OAuth2 tokens checked at OAUTH_PORT,
# where the tests run their token and introspection server).
SUBMISSION_PORT=${SB_SUBMISSION_PORT:-10587}
OAUTH_PORT=${SB_OAUTH_PORT:-10080}
DNS_PORT=${SB_DNS_PORT:-10053}
DKIM_SELECTOR=sb2026
MAIL_DOMAIN=switchboard.test
OTHER_DOMAIN=partner.test
MATRIX_SERVER_NAME=switchboard.test
MAIL_USERS="alice bob carol dave switchboard"
MATRIX_USERS="alice bob carol dave"
SHARED_ALIASES="support sales billing reply bounce"
PASSWORD=${SB_TEST_PASSWORD:-correct-horse-battery}
BOT_MATRIX_USER=switchboard
# Switchboard as an application service (its own bot, so the bot-account tests' rooms are
# never pushed to it), reached by the homeserver on APPSERVICE_PORT; and a bot account
# held to Synapse's default rate limits, as an ordinary account is.
APPSERVICE_BOT=sbas
APPSERVICE_PORT=${SB_APPSERVICE_PORT:-18480}
THROTTLED_BOT=sbslow
# Redis as organisations run it: a primary, a replica and three sentinels watching them
# (Debian's redis-sentinel), for the failover tests; the plain Redis above stays for the rest.
SENTINEL_NODES="${SB_SENTINEL_NODE_PORTS:-16390 16391}"
SENTINEL_PORTS="${SB_SENTINEL_PORTS:-26390 26391 26392}"
SENTINEL_MASTER=switchboard
# Redis's query engine (search): Debian's RediSearch module, loaded by every Redis here.
REDISEARCH=/usr/lib/redis/modules/redisearch.so
VMAIL_USER=sbmail
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/switchboard
SYNAPSE_VENV=$CACHE/synapse-venv
SYNAPSE_VERSION_RANGE='matrix-synapse>=1.100,<2'
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $* (run as root or install sudo)"; fi
}

# --- install -----------------------------------------------------------------

install_packages() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server redis-tools)
    command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
    [ -f "$REDISEARCH" ] || missing+=(redis-redisearch)
    command -v dovecot >/dev/null || missing+=(dovecot-imapd)
    command -v postfix >/dev/null || missing+=(postfix)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
    # Not a service: the browser the report-page tests drive (through Playwright).
    command -v chromium >/dev/null || missing+=(chromium)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} with apt-get"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # policy-rc.d keeps the packages' own system-wide daemons from starting: we
        # run private instances on our own ports instead.
        as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! id "$VMAIL_USER" >/dev/null 2>&1; then
        as_root useradd --system --no-create-home --shell /usr/sbin/nologin "$VMAIL_USER"
    fi
    if [ ! -x "$SYNAPSE_VENV/bin/synapse_homeserver" ]; then
        log "installing Synapse into $SYNAPSE_VENV (pip; once per machine)"
        mkdir -p "$CACHE"
        python3 -m venv "$SYNAPSE_VENV"
        "$SYNAPSE_VENV/bin/pip" install -q "$SYNAPSE_VERSION_RANGE"
    fi
}

# --- readiness ---------------------------------------------------------------

# Waits until a TCP port greets with the expected prefix (or, with no prefix, accepts).
wait_for_banner() {
    local name=$1 port=$2 expect=${3:-} tries=${4:-300} banner
    for _ in $(seq "$tries"); do
        if [ -z "$expect" ]; then
            timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && return 0
        elif banner=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -c ${#expect} <&3" 2>/dev/null) \
            && [ "$banner" = "$expect" ]; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer on 127.0.0.1:$port (see its log under $STATE)"
}

wait_for_http() {
    local name=$1 url=$2 tries=${3:-600}
    for _ in $(seq "$tries"); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer at $url (see its log under $STATE)"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- redis -------------------------------------------------------------------

redis_up() {
    mkdir -p "$STATE/redis"
    if pid_alive "$STATE/redis/redis.pid"; then return; fi
    log "starting redis-server on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STATE/redis" \
        --daemonize yes --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/redis.log" \
        --appendonly yes --appendfsync everysec --save '' --loadmodule "$REDISEARCH"
    wait_for_banner redis "$REDIS_PORT"
    redis_ping "$REDIS_PORT"
}

redis_down() {
    if pid_alive "$STATE/redis/redis.pid"; then
        redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$STATE/redis/redis.pid")"
    fi
}

# --- redis sentinel: a primary, a replica, three sentinels -----------------------

redis_ping() {
    local port=$1
    for _ in $(seq 100); do
        [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return
        sleep 0.1
    done
    die "redis on 127.0.0.1:$port did not answer PING (see its log under $STATE)"
}

# Each node and sentinel is started from a file of its own, written once: Sentinel
# rewrites them as roles change (a failover, a node that comes back as a replica), and
# a node started again (after a fault test killed it) rejoins with what they say.
sentinel_set_up() {
    local dir=$STATE/sentinel first port conf
    mkdir -p "$dir"
    first=${SENTINEL_NODES%% *}
    for port in $SENTINEL_NODES; do
        conf=$dir/node-$port.conf
        if [ ! -f "$conf" ]; then
            mkdir -p "$dir/$port"
            cat >"$conf" <<EOF
bind 127.0.0.1
port $port
dir $dir/$port
daemonize yes
pidfile $dir/node-$port.pid
logfile $dir/node-$port.log
appendonly yes
appendfsync everysec
save ""
EOF
            [ "$port" = "$first" ] || echo "replicaof 127.0.0.1 $first" >>"$conf"
        fi
        # The query engine, on every node: the index fails over with the data.
        grep -q '^loadmodule' "$conf" || echo "loadmodule $REDISEARCH" >>"$conf"
        if ! pid_alive "$dir/node-$port.pid"; then
            log "starting Redis node 127.0.0.1:$port (Sentinel set)"
            redis-server "$conf"
        fi
    done
    for port in $SENTINEL_NODES; do redis_ping "$port"; done
    for port in $SENTINEL_PORTS; do
        conf=$dir/sentinel-$port.conf
        if [ ! -f "$conf" ]; then
            cat >"$conf" <<EOF
bind 127.0.0.1
port $port
dir $dir
daemonize yes
pidfile $dir/sentinel-$port.pid
logfile $dir/sentinel-$port.log
sentinel monitor $SENTINEL_MASTER 127.0.0.1 $first 2
sentinel down-after-milliseconds $SENTINEL_MASTER 1000
sentinel failover-timeout $SENTINEL_MASTER 4000
sentinel parallel-syncs $SENTINEL_MASTER 1
EOF
        fi
        if ! pid_alive "$dir/sentinel-$port.pid"; then
            log "starting redis-sentinel on 127.0.0.1:$port"
            redis-sentinel "$conf"
        fi
    done
    for port in $SENTINEL_PORTS; do redis_ping "$port"; done
}

sentinel_set_down() {
    local dir=$STATE/sentinel port pid
    for port in $SENTINEL_PORTS $SENTINEL_NODES; do
        for pid in "$dir/sentinel-$port.pid" "$dir/node-$port.pid"; do
            if pid_alive "$pid"; then kill "$(cat "$pid")" 2>/dev/null || true; fi
        done
    done
}

# --- mail: shared users and Maildirs -----------------------------------------

mail_users_setup() {
    mkdir -p "$STATE/mail" "$STATE/dovecot" "$STATE/postfix/etc"
    chmod 755 "$STATE"
    : > "$STATE/dovecot/users"
    : > "$STATE/postfix/etc/vmailbox"
    for domain in "$MAIL_DOMAIN" "$OTHER_DOMAIN"; do
        for user in $MAIL_USERS; do
            printf '%s@%s:{PLAIN}%s\n' "$user" "$domain" "$PASSWORD" >> "$STATE/dovecot/users"
            printf '%s@%s %s/%s/Maildir/\n' "$user" "$domain" "$domain" "$user" >> "$STATE/postfix/etc/vmailbox"
            mkdir -p "$STATE/mail/$domain/$user/Maildir/"{cur,new,tmp}
        done
    done
    # Shared addresses that land in Switchboard's own mailbox, as a support@ alias would.
    : > "$STATE/postfix/etc/valiases"
    for alias in $SHARED_ALIASES; do
        printf '%s@%s switchboard@%s\n' "$alias" "$MAIL_DOMAIN" "$MAIL_DOMAIN" >> "$STATE/postfix/etc/valiases"
    done
    chown -R "$VMAIL_USER:$VMAIL_USER" "$STATE/mail"
}

# --- a local certificate authority, so the TLS paths are real -----------------

tls_setup() {
    local dir=$STATE/tls
    mkdir -p "$dir"
    [ -f "$dir/server.pem" ] && return
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Switchboard test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$dir/ext.cnf"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 3650 -extfile "$dir/ext.cnf" -out "$dir/server.pem" 2>/dev/null
    chmod 644 "$dir/server.key" "$dir/server.pem" "$dir/ca.pem"
}

# --- dovecot -----------------------------------------------------------------

dovecot_up() {
    local conf=$STATE/dovecot/dovecot.conf
    mkdir -p "$STATE/dovecot/run"
    cat > "$conf" <<EOF
base_dir = $STATE/dovecot/run
state_dir = $STATE/dovecot/state
instance_name = switchboard-test-dovecot
log_path = $STATE/dovecot/dovecot.log
protocols = imap
listen = 127.0.0.1
# STARTTLS on the IMAP port and implicit TLS on the IMAPS port, with the local CA's cert.
ssl = yes
ssl_cert = <$STATE/tls/server.pem
ssl_key = <$STATE/tls/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
mail_location = maildir:$STATE/mail/%d/%n/Maildir
mail_uid = $VMAIL_USER
mail_gid = $VMAIL_USER
first_valid_uid = 1
imap_id_send = name * version *
# OAuth2 bearer tokens (SASL XOAUTH2 / OAUTHBEARER) are checked with the token server's
# introspection endpoint, as a mailbox provider does; passwords with the users file.
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $STATE/dovecot/oauth2.conf.ext
}
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u $STATE/dovecot/users
}
userdb {
  driver = static
  args = home=$STATE/mail/%d/%n
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
protocol imap {
  mail_max_userip_connections = 200
}
service auth {
  # Postfix's submission port authenticates through Dovecot (smtpd_sasl_type = dovecot).
  unix_listener auth-postfix {
    mode = 0666
  }
}
EOF
    cat > "$STATE/dovecot/oauth2.conf.ext" <<EOF
introspection_mode = post
introspection_url = http://127.0.0.1:$OAUTH_PORT/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
EOF
    mkdir -p "$STATE/dovecot/state"
    if pid_alive "$STATE/dovecot/run/master.pid"; then
        doveadm -c "$conf" reload >/dev/null 2>&1 || true
    else
        log "starting Dovecot IMAP on 127.0.0.1:$IMAP_PORT"
        dovecot -c "$conf"
    fi
    wait_for_banner dovecot "$IMAP_PORT" "* OK"
}

dovecot_down() {
    if pid_alive "$STATE/dovecot/run/master.pid"; then
        dovecot -c "$STATE/dovecot/dovecot.conf" stop 2>/dev/null || kill "$(cat "$STATE/dovecot/run/master.pid")"
    fi
}

# --- postfix -----------------------------------------------------------------

postfix_up() {
    local etc=$STATE/postfix/etc
    mkdir -p "$STATE/postfix/spool" "$STATE/postfix/data"
    chown postfix "$STATE/postfix/data"
    local vuid vgid
    vuid=$(id -u "$VMAIL_USER"); vgid=$(id -g "$VMAIL_USER")
    cat > "$etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $STATE/postfix/spool
data_directory = $STATE/postfix/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = $STATE/postfix/postfix.log
maillog_file_prefixes = $STATE
myhostname = mail.$MAIL_DOMAIN
mydomain = $MAIL_DOMAIN
myorigin = $MAIL_DOMAIN
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = \$myhostname ESMTP Postfix
virtual_mailbox_domains = $MAIL_DOMAIN $OTHER_DOMAIN
virtual_mailbox_base = $STATE/mail
virtual_mailbox_maps = texthash:$etc/vmailbox
virtual_alias_maps = texthash:$etc/valiases
# reply+TOKEN@ lands where reply@ does: Switchboard's own mailbox.
recipient_delimiter = +
virtual_uid_maps = static:$vuid
virtual_gid_maps = static:$vgid
virtual_minimum_uid = 1
default_transport = error:this test mail server delivers only to $MAIL_DOMAIN and $OTHER_DOMAIN
alias_maps =
alias_database =
local_recipient_maps =
message_size_limit = 52428800
smtpd_tls_cert_file = $STATE/tls/server.pem
smtpd_tls_key_file = $STATE/tls/server.key
smtpd_tls_security_level = may
virtual_mailbox_limit = 0
smtputf8_enable = yes
biff = no
EOF
    # The distribution's master.cf, moved to our port and out of the chroot (the chroot
    # would need copies of /etc files inside our temporary queue directory).
    sed -E -e "s/^smtp([[:space:]]+)inet/127.0.0.1:$SMTP_PORT\1inet/" \
        -e 's/^([a-z0-9:.]+[[:space:]]+(inet|unix|fifo|unix-dgram|pass)[[:space:]]+[-ny][[:space:]]+[-ny][[:space:]]+)y/\1n/' \
        /etc/postfix/master.cf > "$etc/master.cf"
    # A port with implicit TLS (submissions), and one that never offers STARTTLS, so
    # clients' refusals of plain links can be tested against a real server.
    {
        printf '127.0.0.1:%s inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n' "$SMTPS_PORT"
        printf '127.0.0.1:%s inet n - n - - smtpd\n  -o smtpd_tls_security_level=none\n' "$SMTP_PLAIN_PORT"
        # Submission that demands a login (a password, or an OAuth2 token) through Dovecot.
        printf '127.0.0.1:%s inet n - n - - smtpd\n' "$SUBMISSION_PORT"
        printf '  -o smtpd_sasl_auth_enable=yes\n  -o smtpd_sasl_type=dovecot\n'
        printf '  -o smtpd_sasl_path=%s\n' "$STATE/dovecot/run/auth-postfix"
        printf '  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n'
        printf '  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject\n'
        printf '  -o mynetworks=\n'
        # Accepted, then bounced by the mailbox delivery: the asynchronous bounce (a DSN
        # to the return path) that mail to a mailbox that does not exist gets elsewhere.
        printf '  -o smtpd_reject_unlisted_recipient=no\n'
    } >> "$etc/master.cf"
    if ! grep -q '^postlog' "$etc/master.cf"; then
        printf 'postlog   unix-dgram n  -       n       -       1       postlogd\n' >> "$etc/master.cf"
    fi
    if postfix -c "$etc" status >/dev/null 2>&1; then
        postfix -c "$etc" reload >/dev/null 2>&1
    else
        log "starting Postfix SMTP on 127.0.0.1:$SMTP_PORT"
        postfix -c "$etc" check >/dev/null 2>&1 || postfix -c "$etc" set-permissions >/dev/null 2>&1 || true
        postfix -c "$etc" start >/dev/null 2>&1 || die "postfix did not start: see $STATE/postfix/postfix.log"
    fi
    wait_for_banner postfix "$SMTP_PORT" "220"
}

postfix_down() {
    local etc=$STATE/postfix/etc
    if [ -f "$etc/main.cf" ] && postfix -c "$etc" status >/dev/null 2>&1; then
        postfix -c "$etc" stop >/dev/null 2>&1 || true
    fi
}

# --- synapse -----------------------------------------------------------------

synapse_up() {
    local dir=$STATE/synapse conf=$STATE/synapse/homeserver.yaml
    mkdir -p "$dir/media_store"
    if [ ! -f "$dir/secrets" ]; then
        python3 -c "import secrets; print(secrets.token_hex(24)); print(secrets.token_hex(24)); print(secrets.token_hex(24))" > "$dir/secrets"
    fi
    local reg_secret macaroon form
    { read -r reg_secret; read -r macaroon; read -r form; } < "$dir/secrets"
    # Written by Switchboard's own command (its tokens kept from one `up` to the next).
    "$ROOT/.venv/bin/switchboard" matrix registration --url "http://127.0.0.1:$APPSERVICE_PORT" \
        --out "$dir/appservice.yaml" --user "@$APPSERVICE_BOT:$MATRIX_SERVER_NAME" >/dev/null
    cat > "$dir/log.config" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $dir/homeserver.log
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
EOF
    cat > "$conf" <<EOF
server_name: "$MATRIX_SERVER_NAME"
pid_file: $dir/homeserver.pid
public_baseurl: http://127.0.0.1:$SYNAPSE_PORT/
listeners:
  - port: $SYNAPSE_PORT
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: $dir/homeserver.db
log_config: $dir/log.config
media_store_path: $dir/media_store
max_upload_size: 50M
registration_shared_secret: "$reg_secret"
macaroon_secret_key: "$macaroon"
form_secret: "$form"
signing_key_path: $dir/signing.key
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
url_preview_enabled: false
enable_metrics: false
presence:
  enabled: true
app_service_config_files: [$dir/appservice.yaml]
# Synapse's default message limit (0.2/s, bursts of 10) stays on for people; the bot
# is exempted through the admin API below, as a production bridge must be (the
# throttled bot and the application service's ghosts are not: rate_limited is false).
rc_message:
  per_second: 0.2
  burst_count: 10
# Tests log in and join far more often than people do.
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_registration:
  per_second: 1000
  burst_count: 1000
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
  remote: {per_second: 1000, burst_count: 1000}
rc_invites:
  per_room: {per_second: 1000, burst_count: 1000}
  per_user: {per_second: 1000, burst_count: 1000}
  per_issuer: {per_second: 1000, burst_count: 1000}
rc_presence:
  per_user: {per_second: 1000, burst_count: 1000}
EOF
    if [ ! -f "$dir/signing.key" ]; then
        "$SYNAPSE_VENV/bin/python" -m synapse.app.homeserver -c "$conf" --generate-keys >/dev/null
    fi
    # A changed configuration (a new registration, say) needs a restart to be read.
    local digest
    digest=$(cat "$conf" "$dir/appservice.yaml" | sha256sum | cut -d' ' -f1)
    if pid_alive "$dir/homeserver.pid" && [ "$(cat "$dir/config.sha256" 2>/dev/null)" != "$digest" ]; then
        log "Synapse's configuration changed: restarting it"
        synapse_down
    fi
    echo "$digest" > "$dir/config.sha256"
    if ! pid_alive "$dir/homeserver.pid"; then
        log "starting Synapse on 127.0.0.1:$SYNAPSE_PORT"
        "$SYNAPSE_VENV/bin/python" -m synapse.app.homeserver -c "$conf" --daemonize
    fi
    wait_for_http synapse "http://127.0.0.1:$SYNAPSE_PORT/_matrix/client/versions"
    python3 "$HERE/matrix_users.py" "http://127.0.0.1:$SYNAPSE_PORT" "$reg_secret" "$PASSWORD" \
        "$BOT_MATRIX_USER" "$THROTTLED_BOT" $MATRIX_USERS
}

synapse_down() {
    local pidfile=$STATE/synapse/homeserver.pid
    if pid_alive "$pidfile"; then
        local pid; pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
}

# --- DNS: the test domains' sender-authentication records --------------------

# Mail from 127.0.0.1 (where the tests send from) passes SPF for both test domains;
# 127.0.0.2 is "elsewhere", so a test can send a spoofed From from there. Both
# domains publish a DKIM key (its private half is for the tests to sign with) and a
# DMARC policy.
dns_up() {
    local dir=$STATE/dns
    mkdir -p "$dir"
    if [ ! -s "$dir/dkim.key" ]; then
        openssl genrsa -out "$dir/dkim.key" 2048 2>/dev/null
    fi
    local pub
    pub=$(openssl rsa -in "$dir/dkim.key" -pubout -outform DER 2>/dev/null | base64 -w0)
    local d
    {
        echo "port=$DNS_PORT"
        echo "listen-address=127.0.0.1"
        echo "bind-interfaces"
        echo "no-resolv"
        echo "no-hosts"
        echo "no-poll"
        echo "local=/test/"
        echo "pid-file=$dir/dnsmasq.pid"
        for d in "$MAIL_DOMAIN" "$OTHER_DOMAIN"; do
            echo "txt-record=$d,\"v=spf1 ip4:127.0.0.1 -all\""
            echo "txt-record=_dmarc.$d,\"v=DMARC1; p=reject; adkim=r; aspf=r\""
            # A TXT string holds at most 255 characters: the key is split over several.
            echo "txt-record=$DKIM_SELECTOR._domainkey.$d,\"v=DKIM1; k=rsa; \",$(echo "p=$pub" | fold -w 250 | sed 's/.*/"&"/' | paste -sd,)"
        done
    } > "$dir/dnsmasq.conf.new"
    if pid_alive "$dir/dnsmasq.pid"; then
        if cmp -s "$dir/dnsmasq.conf.new" "$dir/dnsmasq.conf"; then
            rm "$dir/dnsmasq.conf.new"; return 0
        fi
        kill "$(cat "$dir/dnsmasq.pid")"; sleep 0.2
    fi
    mv "$dir/dnsmasq.conf.new" "$dir/dnsmasq.conf"
    log "starting dnsmasq on 127.0.0.1:$DNS_PORT"
    dnsmasq --conf-file="$dir/dnsmasq.conf" --user="$(id -un)" --log-facility="$dir/dnsmasq.log" \
        </dev/null >/dev/null 2>&1 || die "dnsmasq did not start: see $dir/dnsmasq.log"
    for _ in $(seq 100); do
        pid_alive "$dir/dnsmasq.pid" && return 0
        sleep 0.1
    done
    die "dnsmasq did not start: see $dir/dnsmasq.log"
}

dns_down() {
    if pid_alive "$STATE/dns/dnsmasq.pid"; then kill "$(cat "$STATE/dns/dnsmasq.pid")"; fi
}

# --- the settings file tests and the demo source -----------------------------

write_env() {
    cat > "$STATE/env" <<EOF
# Written by scripts/services.sh: settings that reach the local services.
export SWITCHBOARD_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export SWITCHBOARD_IMAP_HOST=127.0.0.1
export SWITCHBOARD_IMAP_PORT=$IMAP_PORT
export SWITCHBOARD_IMAP_USER=switchboard@$MAIL_DOMAIN
export SWITCHBOARD_IMAP_PASSWORD=$PASSWORD
export SWITCHBOARD_IMAP_TLS=auto
export SWITCHBOARD_SMTP_HOST=127.0.0.1
export SWITCHBOARD_SMTP_PORT=$SMTP_PORT
export SWITCHBOARD_SMTP_TLS=auto
export SWITCHBOARD_TLS_CA_FILE=$STATE/tls/ca.pem
export SWITCHBOARD_BOT_EMAIL=switchboard@$MAIL_DOMAIN
export SWITCHBOARD_REPLY_DOMAIN=$MAIL_DOMAIN
export SWITCHBOARD_MATRIX_HOMESERVER=http://127.0.0.1:$SYNAPSE_PORT
export SWITCHBOARD_MATRIX_USER=@$BOT_MATRIX_USER:$MATRIX_SERVER_NAME
export SWITCHBOARD_MATRIX_PASSWORD=$PASSWORD
export SWITCHBOARD_MATRIX_KEY_STORE=$STATE/matrix-keys
export SWITCHBOARD_DNS_SERVER=127.0.0.1:$DNS_PORT
export SWITCHBOARD_AUTH_TRUSTED_HOSTS=mail.$MAIL_DOMAIN
export SB_STATE_DIR=$STATE
export SB_SUBMISSION_PORT=$SUBMISSION_PORT
export SB_OAUTH_PORT=$OAUTH_PORT
export SB_DNS_PORT=$DNS_PORT
export SB_DKIM_KEY=$STATE/dns/dkim.key
export SB_DKIM_SELECTOR=$DKIM_SELECTOR
export SB_REDIS_PORT=$REDIS_PORT
export SB_IMAP_PORT=$IMAP_PORT
export SB_SMTP_PORT=$SMTP_PORT
export SB_SYNAPSE_PORT=$SYNAPSE_PORT
export SB_SYNAPSE_SECRETS=$STATE/synapse/secrets
export SB_IMAPS_PORT=$IMAPS_PORT
export SB_SMTPS_PORT=$SMTPS_PORT
export SB_SMTP_PLAIN_PORT=$SMTP_PLAIN_PORT
export SB_TLS_CA=$STATE/tls/ca.pem
export SB_MAIL_DOMAIN=$MAIL_DOMAIN
export SB_OTHER_MAIL_DOMAIN=$OTHER_DOMAIN
export SB_MATRIX_SERVER_NAME=$MATRIX_SERVER_NAME
export SB_TEST_PASSWORD=$PASSWORD
export SB_MAIL_USERS="$MAIL_USERS"
export SB_MATRIX_USERS="$MATRIX_USERS"
export SB_SHARED_ALIASES="$SHARED_ALIASES"
export SB_APPSERVICE_REGISTRATION=$STATE/synapse/appservice.yaml
export SB_APPSERVICE_PORT=$APPSERVICE_PORT
export SB_APPSERVICE_BOT=@$APPSERVICE_BOT:$MATRIX_SERVER_NAME
export SB_THROTTLED_BOT=@$THROTTLED_BOT:$MATRIX_SERVER_NAME
export SB_SENTINELS=$(for p in $SENTINEL_PORTS; do printf '127.0.0.1:%s,' "$p"; done | sed 's/,$//')
export SB_SENTINEL_MASTER=$SENTINEL_MASTER
export SB_SENTINEL_NODES="$SENTINEL_NODES"
export SB_SENTINEL_DIR=$STATE/sentinel
EOF
}

status() {
    local s
    for s in redis:"$STATE/redis/redis.pid" dovecot:"$STATE/dovecot/run/master.pid" \
        postfix:"$STATE/postfix/spool/pid/master.pid" synapse:"$STATE/synapse/homeserver.pid" \
        dnsmasq:"$STATE/dns/dnsmasq.pid"; do
        if pid_alive "${s#*:}"; then echo "${s%%:*}: running"; else echo "${s%%:*}: stopped"; fi
    done
}

case "${1:-}" in
    up)
        mkdir -p "$STATE"
        install_packages
        tls_setup
        mail_users_setup
        redis_up
        sentinel_set_up
        dovecot_up
        postfix_up
        synapse_up
        dns_up
        write_env
        log "all services ready; settings in $STATE/env"
        ;;
    down)
        dns_down; synapse_down; postfix_down; dovecot_down; sentinel_set_down; redis_down
        log "services stopped (state kept in $STATE; remove it for a clean start)"
        ;;
    restart)
        # One service, for fault tests: scripts/services.sh restart synapse|postfix|dovecot|dns
        case "${2:-}" in
            synapse|postfix|dovecot|dns) "${2}_down"; "${2}_up" ;;
            *) die "restart what? synapse, postfix, dovecot or dns" ;;
        esac
        ;;
    stop)
        case "${2:-}" in
            synapse|postfix|dovecot|dns) "${2}_down" ;;
            *) die "stop what? synapse, postfix, dovecot or dns" ;;
        esac
        ;;
    status) status ;;
    env) echo "$STATE/env" ;;
    *) echo "usage: $0 up|down|restart NAME|stop NAME|status|env" >&2; exit 2 ;;
esac
