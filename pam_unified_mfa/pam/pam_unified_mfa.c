/*
 * pam_unified_mfa: relays the PAM conversation to the local daemon `unified-mfa pamd` over a
 * Unix stream socket, as docs/pam-protocol.md describes. The daemon decides every prompt and
 * the verdict; this module only shows what it is told and returns the answers.
 *
 *   auth required pam_unified_mfa.so [socket=PATH] [timeout=SECONDS]
 *                                    [failmode=secure|safe] [autopush] [debug]
 *
 * A bad option or a value that cannot be sent fails closed. An unreachable daemon, a daemon
 * that keeps us waiting longer than timeout= in total (the user's time at a prompt does not
 * count) or a protocol error applies the fail mode: PAM_AUTHINFO_UNAVAIL (secure, the
 * default) or PAM_SUCCESS with a warning (safe). Answers are never logged and are wiped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <security/pam_ext.h>
#include <security/pam_modules.h>

#include "protocol.h"

/* Internal result: the daemon is unreachable, too slow or broke the protocol. */
#define UMFA_FAIL_MODE (-1)

struct options {
    const char *socket;
    int timeout;
    int safe;
    int autopush;
    int debug;
};

struct session {
    pam_handle_t *pamh;
    int debug;
    int fd;
    long long deadline; /* CLOCK_MONOTONIC, in milliseconds */
    char in[UMFA_MAX_LINE];   /* received bytes not yet framed into a line */
    size_t in_len;
    char line[UMFA_MAX_LINE]; /* the current line without its '\n', NUL-terminated */
    char *msg[UMFA_MAX_MESSAGES];
    int style[UMFA_MAX_MESSAGES];
    int n_msg;
    char *answer;
};

static void wipe_free(char **p)
{
    if (*p != NULL) {
        explicit_bzero(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

static void clear_messages(struct session *s)
{
    for (int i = 0; i < s->n_msg; i++)
        wipe_free(&s->msg[i]);
    s->n_msg = 0;
}

static int parse_options(pam_handle_t *pamh, int argc, const char **argv, struct options *opt)
{
    opt->socket = UMFA_DEFAULT_SOCKET;
    opt->timeout = UMFA_DEFAULT_TIMEOUT;
    opt->safe = opt->autopush = opt->debug = 0;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int ok = 1;

        if (strncmp(a, "socket=", 7) == 0) {
            opt->socket = a + 7;
            ok = opt->socket[0] == '/' &&
                 strlen(opt->socket) < sizeof(((struct sockaddr_un *)NULL)->sun_path);
        } else if (strncmp(a, "timeout=", 8) == 0) {
            char *end = NULL;
            long v;

            errno = 0;
            v = strtol(a + 8, &end, 10);
            ok = a[8] >= '0' && a[8] <= '9' && errno == 0 && *end == '\0' &&
                 v >= UMFA_MIN_TIMEOUT && v <= UMFA_MAX_TIMEOUT;
            opt->timeout = (int)v;
        } else if (strcmp(a, "failmode=" UMFA_FAILMODE_SECURE) == 0) {
            opt->safe = 0;
        } else if (strcmp(a, "failmode=" UMFA_FAILMODE_SAFE) == 0) {
            opt->safe = 1;
        } else if (strcmp(a, "autopush") == 0) {
            opt->autopush = 1;
        } else if (strcmp(a, "debug") == 0) {
            opt->debug = 1;
        } else {
            ok = 0;
        }
        if (!ok) {
            pam_syslog(pamh, LOG_ERR, "unknown or malformed option \"%s\": refusing to authenticate",
                       a);
            return PAM_SERVICE_ERR;
        }
    }
    return PAM_SUCCESS;
}

/* Strict UTF-8, as a Python decoder reads it: no overlong forms, surrogates or values
 * above U+10FFFF. */
static int utf8_ok(const char *text, size_t n)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t i = 0;

    while (i < n) {
        unsigned int cp;
        size_t len;

        if (p[i] < 0x80) {
            i++;
            continue;
        }
        if (p[i] >= 0xC2 && p[i] <= 0xDF) {
            len = 2;
            cp = p[i] & 0x1Fu;
        } else if (p[i] >= 0xE0 && p[i] <= 0xEF) {
            len = 3;
            cp = p[i] & 0x0Fu;
        } else if (p[i] >= 0xF0 && p[i] <= 0xF4) {
            len = 4;
            cp = p[i] & 0x07u;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0u) != 0x80u)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3Fu);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += len;
    }
    return 1;
}

/* Whether "VERB ARG\n" is a line the daemon accepts. */
static int line_ok(const char *verb, const char *arg)
{
    size_t n = strlen(arg);

    return strlen(verb) + 1 + n + 1 <= UMFA_MAX_LINE && strpbrk(arg, "\r\n") == NULL &&
           utf8_ok(arg, n);
}

static long long now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Waits until the socket is ready for events; -1 when the deadline passes first. */
static int wait_fd(struct session *s, short events)
{
    struct pollfd p = {.fd = s->fd, .events = events};

    for (;;) {
        long long ms = s->deadline - now_ms();
        int r;

        if (ms <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        r = poll(&p, 1, (int)ms);
        if (r > 0)
            return 0;
        if (r == 0)
            errno = ETIMEDOUT;
        if (r == 0 || errno != EINTR)
            return -1;
    }
}

/* Appends "VERB\n" or "VERB ARG\n" to out; the caller has checked ARG with line_ok(). */
static int put_line(char *out, size_t size, size_t *len, const char *verb, const char *arg)
{
    size_t room = size - *len;
    int n = arg != NULL ? snprintf(out + *len, room, "%s %s\n", verb, arg)
                        : snprintf(out + *len, room, "%s\n", verb);

    if (n < 0 || n > UMFA_MAX_LINE || (size_t)n >= room)
        return -1;
    *len += (size_t)n;
    return 0;
}

/* Writes all n bytes within the deadline; `what` names them in the log. */
static int send_all(struct session *s, const char *out, size_t n, const char *what)
{
    size_t off = 0;

    while (off < n) {
        ssize_t w = send(s->fd, out + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (w > 0)
            off += (size_t)w;
        else if ((w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
                 wait_fd(s, POLLOUT) != 0) {
            pam_syslog(s->pamh, LOG_ERR, "sending %s to the daemon: %m", what);
            return -1;
        }
    }
    if (s->debug)
        pam_syslog(s->pamh, LOG_DEBUG, "sent %s", what);
    return 0;
}

static int send_line(struct session *s, const char *verb, const char *arg)
{
    char out[UMFA_MAX_LINE + 1];
    size_t len = 0;
    int rc = put_line(out, sizeof(out), &len, verb, arg);

    if (rc != 0)
        pam_syslog(s->pamh, LOG_ERR, "%s: line too long", verb);
    else
        rc = send_all(s, out, len, verb);
    explicit_bzero(out, sizeof(out));
    return rc;
}

/* HELLO, the headers and BEGIN in one write, without waiting for the daemon's HELLO: the
 * daemon then wakes once, not once a line, and the login saves a round trip. */
static int send_opening(struct session *s, const struct options *opt, const char *user,
                        const char *service, const char *rhost, const char *tty)
{
    char out[UMFA_MAX_OPENING * (UMFA_MAX_LINE + 1)];
    size_t len = 0, size = sizeof(out);
    int rc = put_line(out, size, &len, UMFA_HELLO, UMFA_PROTOCOL_VERSION) != 0 ||
             put_line(out, size, &len, UMFA_USER, user) != 0 ||
             (service != NULL && put_line(out, size, &len, UMFA_SERVICE, service) != 0) ||
             (rhost != NULL && put_line(out, size, &len, UMFA_RHOST, rhost) != 0) ||
             (tty != NULL && put_line(out, size, &len, UMFA_TTY, tty) != 0) ||
             put_line(out, size, &len, UMFA_FAILMODE,
                      opt->safe ? UMFA_FAILMODE_SAFE : UMFA_FAILMODE_SECURE) != 0 ||
             (opt->autopush && put_line(out, size, &len, UMFA_AUTOPUSH, NULL) != 0) ||
             put_line(out, size, &len, UMFA_BEGIN, NULL) != 0 ? -1 : 0;

    if (rc != 0)
        pam_syslog(s->pamh, LOG_ERR, "the opening lines do not fit");
    else
        rc = send_all(s, out, len, UMFA_HELLO " to " UMFA_BEGIN);
    explicit_bzero(out, sizeof(out));
    return rc;
}

/* Reads the next line into s->line; -1 on a protocol error, an early close or the deadline. */
static int read_line(struct session *s)
{
    for (;;) {
        char *nl = memchr(s->in, '\n', s->in_len);
        ssize_t r;

        if (nl != NULL) {
            size_t n = (size_t)(nl - s->in);

            memcpy(s->line, s->in, n);
            s->line[n] = '\0';
            s->in_len -= n + 1;
            memmove(s->in, nl + 1, s->in_len);
            if (memchr(s->line, '\0', n) != NULL || memchr(s->line, '\r', n) != NULL ||
                !utf8_ok(s->line, n)) {
                pam_syslog(s->pamh, LOG_ERR, "protocol error: a line with NUL, CR or bad UTF-8");
                return -1;
            }
            return 0;
        }
        if (s->in_len == sizeof(s->in)) {
            pam_syslog(s->pamh, LOG_ERR, "protocol error: a line longer than %d bytes",
                       UMFA_MAX_LINE);
            return -1;
        }
        r = recv(s->fd, s->in + s->in_len, sizeof(s->in) - s->in_len, MSG_DONTWAIT);
        if (r > 0) {
            s->in_len += (size_t)r;
        } else if (r == 0) {
            pam_syslog(s->pamh, LOG_ERR, "the daemon closed the connection early");
            return -1;
        } else if ((errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
                   wait_fd(s, POLLIN) != 0) {
            pam_syslog(s->pamh, LOG_ERR, "waiting for the daemon: %m");
            return -1;
        }
    }
}

/* Owned by root (or by us) and not writable by group or others. */
static int trusted(const struct stat *st, uid_t euid)
{
    return (st->st_uid == 0 || st->st_uid == euid) && (st->st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

static int connect_daemon(struct session *s, const char *path)
{
    struct sockaddr_un addr;
    struct stat st;
    struct timeval tv;
    struct ucred peer;
    socklen_t peer_len = sizeof(peer);
    char dir[sizeof(addr.sun_path)];
    char *slash;
    uid_t euid = geteuid();
    long long ms;

    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1); /* length checked with the options */
    memcpy(dir, path, strlen(path) + 1);
    slash = strrchr(dir, '/');
    slash[slash == dir ? 1 : 0] = '\0';

    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || !trusted(&st, euid)) {
        pam_syslog(s->pamh, LOG_ERR, "socket directory %s is missing or not trusted", dir);
        return -1;
    }
    if (lstat(path, &st) != 0) {
        pam_syslog(s->pamh, LOG_ERR, "cannot reach the daemon at %s: %m", path);
        return -1;
    }
    if (!S_ISSOCK(st.st_mode) || !trusted(&st, euid)) {
        pam_syslog(s->pamh, LOG_ERR, "%s is not a trusted socket (owner root, mode 0600)", path);
        return -1;
    }
    s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ms = s->deadline - now_ms(); /* connect() waits for a busy listener until the deadline */
    tv.tv_sec = ms > 0 ? ms / 1000 : 0;
    tv.tv_usec = ms > 0 ? (ms % 1000) * 1000 : 1;
    if (s->fd < 0 || setsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(s->fd, (const struct sockaddr *)&addr, sizeof(addr)) != 0) {
        pam_syslog(s->pamh, LOG_ERR, "cannot connect to the daemon at %s: %m", path);
        return -1;
    }
    if (getsockopt(s->fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0 ||
        (peer.uid != 0 && peer.uid != euid)) {
        pam_syslog(s->pamh, LOG_ERR, "the process behind %s is not trusted", path);
        return -1;
    }
    if (fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK) != 0) {
        pam_syslog(s->pamh, LOG_ERR, "fcntl: %m");
        return -1;
    }
    return 0;
}

/*
 * One pam_conv call with the collected INFO/ERROR messages plus `text` in `style` (when
 * `text` is not NULL). For a prompt, the answer moves to s->answer. Consumes the messages.
 * Consecutive messages of one style travel as one message joined by newlines: applications
 * cap the messages of a call (sshd at PAM_MAX_NUM_MSG, 32), and a QR code is many lines.
 */
static int converse(struct session *s, int style, const char *text)
{
    struct pam_message m[UMFA_MAX_MESSAGES + 1];
    const struct pam_message *mp[UMFA_MAX_MESSAGES + 1];
    char *joined[UMFA_MAX_MESSAGES];
    struct pam_response *resp = NULL;
    const struct pam_conv *conv = NULL;
    int prompt = style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON;
    int n = 0, n_joined = 0, rc = PAM_SUCCESS;

    for (int i = 0; i < s->n_msg; i++) {
        if (n > 0 && m[n - 1].msg_style == s->style[i]) {
            size_t have = strlen(joined[n - 1]), add = strlen(s->msg[i]);
            char *grown = realloc(joined[n - 1], have + add + 2);

            if (grown == NULL) {
                rc = PAM_BUF_ERR;
                goto done;
            }
            grown[have] = '\n';
            memcpy(grown + have + 1, s->msg[i], add + 1);
            joined[n - 1] = grown;
            m[n - 1].msg = grown;
            continue;
        }
        joined[n] = strdup(s->msg[i]);
        if (joined[n] == NULL) {
            rc = PAM_BUF_ERR;
            goto done;
        }
        n_joined = n + 1;
        m[n].msg_style = s->style[i];
        m[n].msg = joined[n];
        mp[n] = &m[n];
        n++;
    }
    if (text != NULL) {
        m[n].msg_style = style;
        m[n].msg = text;
        mp[n] = &m[n];
        n++;
    }
    if (n == 0)
        goto done;
    rc = pam_get_item(s->pamh, PAM_CONV, (const void **)&conv);
    if (rc == PAM_SUCCESS && conv != NULL && conv->conv != NULL) {
        long long asked = now_ms();

        rc = conv->conv(n, mp, &resp, conv->appdata_ptr);
        /* The user's time is not the daemon's: a slow answer must not fail open. */
        s->deadline += now_ms() - asked;
    } else {
        rc = PAM_CONV_ERR;
    }
    if (rc == PAM_SUCCESS && prompt) {
        if (resp != NULL && resp[n - 1].resp != NULL) {
            s->answer = resp[n - 1].resp;
            resp[n - 1].resp = NULL;
        } else {
            rc = PAM_CONV_ERR;
        }
    }
    if (rc != PAM_SUCCESS) {
        pam_syslog(s->pamh, LOG_NOTICE, "the conversation failed: %s", pam_strerror(s->pamh, rc));
        rc = PAM_CONV_ERR;
    }
done:
    for (int i = 0; resp != NULL && i < n; i++)
        wipe_free(&resp[i].resp);
    free(resp);
    for (int i = 0; i < n_joined; i++)
        free(joined[i]);
    clear_messages(s);
    return rc;
}

static int is_verb(const char *line, const char *verb)
{
    return strcmp(line, verb) == 0;
}

/* The rounds after BEGIN: collect messages, ask on prompts, end on a verdict. */
static int dialogue(struct session *s)
{
    for (;;) {
        char *arg;

        if (read_line(s) != 0)
            return UMFA_FAIL_MODE;
        arg = strchr(s->line, ' ');
        if (arg != NULL)
            *arg++ = '\0';
        if (s->debug)
            pam_syslog(s->pamh, LOG_DEBUG, "received %s",
                       s->line[strspn(s->line, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_")] == '\0'
                           ? s->line
                           : "a line that is not a verb");

        if (is_verb(s->line, UMFA_INFO) || is_verb(s->line, UMFA_ERROR)) {
            if (s->n_msg == UMFA_MAX_MESSAGES) {
                pam_syslog(s->pamh, LOG_ERR, "protocol error: more than %d messages in a round",
                           UMFA_MAX_MESSAGES);
                return UMFA_FAIL_MODE;
            }
            s->msg[s->n_msg] = strdup(arg != NULL ? arg : "");
            if (s->msg[s->n_msg] == NULL)
                return PAM_BUF_ERR;
            s->style[s->n_msg++] = is_verb(s->line, UMFA_INFO) ? PAM_TEXT_INFO : PAM_ERROR_MSG;
        } else if (is_verb(s->line, UMFA_PROMPT) || is_verb(s->line, UMFA_PROMPT_ECHO)) {
            int style = is_verb(s->line, UMFA_PROMPT) ? PAM_PROMPT_ECHO_OFF : PAM_PROMPT_ECHO_ON;
            int rc = converse(s, style, arg != NULL ? arg : "");

            if (rc != PAM_SUCCESS)
                return rc;
            if (!line_ok(UMFA_ANSWER, s->answer)) {
                pam_syslog(s->pamh, LOG_ERR, "refused an answer that is too long, holds a line "
                                             "break or is not UTF-8: nothing of it was sent");
                return PAM_AUTH_ERR;
            }
            if (send_line(s, UMFA_ANSWER, s->answer) != 0)
                return UMFA_FAIL_MODE;
            wipe_free(&s->answer);
        } else if (is_verb(s->line, UMFA_ACCEPT) && arg == NULL) {
            (void)converse(s, PAM_TEXT_INFO, NULL);
            return PAM_SUCCESS;
        } else if (is_verb(s->line, UMFA_REJECT)) {
            (void)converse(s, PAM_ERROR_MSG, arg != NULL && *arg != '\0' ? arg : NULL);
            return PAM_AUTH_ERR;
        } else if (is_verb(s->line, UMFA_UNAVAILABLE) && arg == NULL) {
            (void)converse(s, PAM_TEXT_INFO, NULL);
            return UMFA_FAIL_MODE;
        } else {
            pam_syslog(s->pamh, LOG_ERR, "protocol error: an unexpected line from the daemon");
            return UMFA_FAIL_MODE;
        }
    }
}

/* A PAM item to forward: NULL when unset or empty; -1 when it cannot be sent. */
static int get_item(pam_handle_t *pamh, int item, const char *verb, const char **value)
{
    const void *v = NULL;

    *value = NULL;
    if (pam_get_item(pamh, item, &v) != PAM_SUCCESS || v == NULL || *(const char *)v == '\0')
        return 0;
    if (!line_ok(verb, v)) {
        pam_syslog(pamh, LOG_ERR, "refusing: the %s item holds a line break, is not UTF-8 or "
                                  "is too long", verb);
        return -1;
    }
    *value = v;
    return 0;
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    struct options opt;
    struct session s;
    const char *user = NULL, *service, *rhost, *tty;
    int rc;

    (void)flags;
    memset(&s, 0, sizeof(s));
    s.pamh = pamh;
    s.fd = -1;

    rc = parse_options(pamh, argc, argv, &opt);
    if (rc != PAM_SUCCESS)
        goto done;
    s.debug = opt.debug;

    rc = pam_get_user(pamh, &user, NULL);
    if (rc != PAM_SUCCESS || user == NULL || *user == '\0' || !line_ok(UMFA_USER, user)) {
        pam_syslog(pamh, LOG_ERR, "refusing a missing or unusable user name");
        rc = rc == PAM_SUCCESS ? PAM_AUTH_ERR : rc;
        user = NULL;
        goto done;
    }
    if (get_item(pamh, PAM_SERVICE, UMFA_SERVICE, &service) != 0 ||
        get_item(pamh, PAM_RHOST, UMFA_RHOST, &rhost) != 0 ||
        get_item(pamh, PAM_TTY, UMFA_TTY, &tty) != 0) {
        rc = PAM_AUTHINFO_UNAVAIL;
        goto done;
    }

    s.deadline = now_ms() + opt.timeout * 1000LL;
    rc = UMFA_FAIL_MODE;
    if (connect_daemon(&s, opt.socket) != 0 ||
        send_opening(&s, &opt, user, service, rhost, tty) != 0 || read_line(&s) != 0)
        goto done;
    if (!is_verb(s.line, UMFA_HELLO " " UMFA_PROTOCOL_VERSION)) {
        pam_syslog(pamh, LOG_ERR, "protocol error: the daemon does not speak version "
                                  UMFA_PROTOCOL_VERSION);
        goto done;
    }
    rc = dialogue(&s);

done:
    if (rc == UMFA_FAIL_MODE && opt.safe) {
        pam_syslog(pamh, LOG_WARNING, "user %s: MFA daemon unavailable, failing open "
                                      "(failmode=safe)", user);
        rc = PAM_SUCCESS;
    } else if (rc == UMFA_FAIL_MODE) {
        pam_syslog(pamh, LOG_ERR, "user %s: MFA daemon unavailable, failing closed "
                                  "(failmode=secure)", user);
        rc = PAM_AUTHINFO_UNAVAIL;
    } else if (user != NULL) {
        pam_syslog(pamh, rc == PAM_SUCCESS ? LOG_INFO : LOG_NOTICE, "user %s: %s", user,
                   pam_strerror(pamh, rc));
    }
    if (s.fd >= 0)
        close(s.fd);
    wipe_free(&s.answer);
    clear_messages(&s);
    explicit_bzero(s.in, sizeof(s.in));
    explicit_bzero(s.line, sizeof(s.line));
    return rc;
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}
