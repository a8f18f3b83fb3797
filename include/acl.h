/*
 * acl: which peer addresses may change things (write methods), as a list of
 * IPv4/IPv6 networks. A pure module: parsing and matching, no sockets, no
 * logging. Reading is open to every client the server accepts.
 */
#ifndef WMD_ACL_H
#define WMD_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Sixteen networks cover a lab's subnets and a few hosts; a longer list
 * belongs in the firewall. */
#define ACL_MAX 16

struct acl_net {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network address, host bits cleared */
    unsigned prefix;  /* bits */
};

/* Embedded in the config; plain data. */
struct acl {
    size_t n;
    struct acl_net nets[ACL_MAX];
};

/* Parse "10.0.0.0/8", "192.168.1.7" (a /32), "::1", "fd00::/8" into net.
 * Host bits set under the prefix are an error (a typo more often than not).
 * Returns 0 or -EINVAL with a reason in err. */
int acl_parse_net(const char *text, struct acl_net *net, char *err, size_t errlen);

/* True when addr (AF_INET or AF_INET6; an IPv4-mapped IPv6 address counts as
 * IPv4) is inside one of the networks. */
bool acl_allows(const struct acl *acl, const struct sockaddr *addr);

#endif
