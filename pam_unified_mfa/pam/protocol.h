/*
 * The PAM socket protocol, version 1: the constants of docs/pam-protocol.md.
 *
 * Version history:
 *   1 (2026-11): first version.
 */
#ifndef UNIFIED_MFA_PROTOCOL_H
#define UNIFIED_MFA_PROTOCOL_H

#define UMFA_PROTOCOL_VERSION "1"

/* A line is at most this many bytes, including the final '\n'. */
#define UMFA_MAX_LINE 1024

/* Lines the module sends before the first prompt: HELLO, the five headers, AUTOPUSH, BEGIN. */
#define UMFA_MAX_OPENING 8

/* INFO and ERROR lines the module collects before one prompt or verdict. */
#define UMFA_MAX_MESSAGES 64

#define UMFA_DEFAULT_SOCKET "/run/unified-mfa/pamd.sock"
#define UMFA_DEFAULT_TIMEOUT 90 /* seconds, for the whole exchange */
#define UMFA_MIN_TIMEOUT 1
#define UMFA_MAX_TIMEOUT 600

/* module -> daemon */
#define UMFA_HELLO "HELLO"
#define UMFA_USER "USER"
#define UMFA_SERVICE "SERVICE"
#define UMFA_RHOST "RHOST"
#define UMFA_TTY "TTY"
#define UMFA_FAILMODE "FAILMODE"
#define UMFA_AUTOPUSH "AUTOPUSH"
#define UMFA_BEGIN "BEGIN"
#define UMFA_ANSWER "ANSWER"

/* daemon -> module (and HELLO) */
#define UMFA_INFO "INFO"
#define UMFA_ERROR "ERROR"
#define UMFA_PROMPT "PROMPT"
#define UMFA_PROMPT_ECHO "PROMPT_ECHO"
#define UMFA_ACCEPT "ACCEPT"
#define UMFA_REJECT "REJECT"
#define UMFA_UNAVAILABLE "UNAVAILABLE"

#define UMFA_FAILMODE_SECURE "secure"
#define UMFA_FAILMODE_SAFE "safe"

#endif
