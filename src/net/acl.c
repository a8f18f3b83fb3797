/*
 * acl: network allow-lists for write access. Parses CIDR text and matches
 * peer addresses; it owns nothing and never sees a socket.
 */
#include "acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix) {
    unsigned full = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

int acl_parse_net(const char *text, struct acl_net *net, char *err, size_t errlen) {
    char buf[64];
    const char *slash = strchr(text, '/');
    size_t len = slash ? (size_t)(slash - text) : strlen(text);
    unsigned max_bits;
    char *end;

    memset(net, 0, sizeof(*net));
    if (len == 0 || len >= sizeof(buf)) {
        snprintf(err, errlen, "\"%s\" is not an address or network", text);
        return -EINVAL;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, net->addr) == 1) {
        net->family = AF_INET;
        max_bits = 32;
    } else if (inet_pton(AF_INET6, buf, net->addr) == 1) {
        net->family = AF_INET6;
        max_bits = 128;
    } else {
        snprintf(err, errlen, "\"%s\" is not a numeric IPv4 or IPv6 address", buf);
        return -EINVAL;
    }
    net->prefix = max_bits;
    if (slash) {
        errno = 0;
        unsigned long bits = strtoul(slash + 1, &end, 10);
        if (errno || end == slash + 1 || *end || bits > max_bits) {
            snprintf(err, errlen, "\"%s\": prefix must be 0 to %u bits", text, max_bits);
            return -EINVAL;
        }
        net->prefix = (unsigned)bits;
    }
    /* Peers in ::ffff:0:0/96 are matched as IPv4, so such an entry would
     * silently match nobody: ask for the IPv4 spelling instead. */
    if (net->family == AF_INET6 && net->prefix >= 96 &&
        memcmp(net->addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        snprintf(err, errlen, "\"%s\": write IPv4-mapped networks as IPv4 (%u.%u.%u.%u/%u)", text,
                 net->addr[12], net->addr[13], net->addr[14], net->addr[15], net->prefix - 96);
        return -EINVAL;
    }
    /* 10.1.2.3/8 is almost always a typo for 10.1.2.3 or 10.0.0.0/8. */
    for (unsigned bit = net->prefix; bit < max_bits; bit++) {
        if (net->addr[bit / 8] & (0x80u >> (bit % 8))) {
            snprintf(err, errlen, "\"%s\": host bits set below the /%u prefix", text, net->prefix);
            return -EINVAL;
        }
    }
    return 0;
}

bool acl_allows(const struct acl *acl, const struct sockaddr *addr) {
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const uint8_t *bytes;
    int family = addr->sa_family;

    if (family == AF_INET) {
        bytes = (const uint8_t *)&((const struct sockaddr_in *)(const void *)addr)->sin_addr;
    } else if (family == AF_INET6) {
        bytes = ((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr.s6_addr;
        if (memcmp(bytes, v4mapped, sizeof(v4mapped)) == 0) {
            family = AF_INET;
            bytes += 12;
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < acl->n; i++) {
        if (acl->nets[i].family == family &&
            prefix_match(bytes, acl->nets[i].addr, acl->nets[i].prefix))
            return true;
    }
    return false;
}
