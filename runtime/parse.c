/* The command-line spellings of the spec's structured fields, shared by
 * strata-run and `strata run` so both accept exactly the same text. */
#include "internal.h"
#include "err.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int parse_ulong(const char *s, char **end, unsigned long *out)
{
	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	*out = strtoul(s, end, 10);
	return (errno || *end == s) ? -EINVAL : 0;
}

int strata_parse_bind(char *arg, struct strata_bind *out, struct strata_error *err)
{
	char *src = arg, *dst = strchr(arg, ':');

	if (!dst || dst == src || !dst[1])
		goto bad;
	*dst++ = '\0';
	out->src = src;
	out->dst = dst;
	out->readonly = false;
	char *mode = strchr(dst, ':');
	if (mode) {
		*mode++ = '\0';
		if (strcmp(mode, "ro") == 0)
			out->readonly = true;
		else if (strcmp(mode, "rw") != 0)
			goto bad;
	}
	if (dst[0] != '/')
		goto bad;
	return 0;
bad:
	rt_usage(err, "--bind '%s' is not SRC:DST[:ro|:rw] with an absolute DST", arg);
	return -EINVAL;
}

int strata_parse_idmap(const char *arg, struct strata_idmap *out, struct strata_error *err)
{
	char *end;
	const char *p = arg;

	if (parse_ulong(p, &end, &out->inside) < 0 || *end != ':' ||
	    parse_ulong(end + 1, &end, &out->outside) < 0 || *end != ':' ||
	    parse_ulong(end + 1, &end, &out->count) < 0 || *end || out->count == 0) {
		rt_usage(err, "id map '%s' is not INSIDE:OUTSIDE:COUNT (e.g. 0:100000:65536)", arg);
		return -EINVAL;
	}
	return 0;
}

static const struct {
	const char *name;
	int resource;
} rlimit_names[] = {
	{ "as", RLIMIT_AS }, { "core", RLIMIT_CORE }, { "cpu", RLIMIT_CPU },
	{ "data", RLIMIT_DATA }, { "fsize", RLIMIT_FSIZE }, { "locks", RLIMIT_LOCKS },
	{ "memlock", RLIMIT_MEMLOCK }, { "msgqueue", RLIMIT_MSGQUEUE }, { "nice", RLIMIT_NICE },
	{ "nofile", RLIMIT_NOFILE }, { "nproc", RLIMIT_NPROC }, { "rss", RLIMIT_RSS },
	{ "rtprio", RLIMIT_RTPRIO }, { "rttime", RLIMIT_RTTIME },
	{ "sigpending", RLIMIT_SIGPENDING }, { "stack", RLIMIT_STACK },
};

static int parse_limit(const char *s, char **end, rlim_t *out)
{
	unsigned long v;

	if (strncasecmp(s, "unlimited", 9) == 0) {
		*out = RLIM_INFINITY;
		*end = (char *)s + 9;
		return 0;
	}
	if (parse_ulong(s, end, &v) < 0)
		return -EINVAL;
	*out = v;
	return 0;
}

int strata_parse_rlimit(const char *arg, struct strata_rlimit *out, struct strata_error *err)
{
	const char *eq = strchr(arg, '=');
	char *end;
	size_t i, n = eq ? (size_t)(eq - arg) : 0;

	if (!eq)
		goto bad;
	const char *name = strncasecmp(arg, "rlimit_", 7) == 0 ? arg + 7 : arg;
	n -= (size_t)(name - arg);
	for (i = 0; i < sizeof rlimit_names / sizeof rlimit_names[0]; i++)
		if (strlen(rlimit_names[i].name) == n && strncasecmp(name, rlimit_names[i].name, n) == 0)
			break;
	if (i == sizeof rlimit_names / sizeof rlimit_names[0]) {
		rt_usage(err, "--rlimit '%s': unknown limit (nofile, nproc, core, stack, as, cpu, fsize, ...)", arg);
		return -EINVAL;
	}
	out->resource = rlimit_names[i].resource;
	if (parse_limit(eq + 1, &end, &out->soft) < 0)
		goto bad;
	out->hard = out->soft;
	if (*end == ':' && parse_limit(end + 1, &end, &out->hard) < 0)
		goto bad;
	if (*end || (out->hard != RLIM_INFINITY && out->soft > out->hard))
		goto bad;
	return 0;
bad:
	rt_usage(err, "--rlimit '%s' is not NAME=SOFT[:HARD] with SOFT <= HARD", arg);
	return -EINVAL;
}

int strata_parse_user(const char *arg, uid_t *uid, gid_t *gid, struct strata_error *err)
{
	unsigned long u, g;
	char *end;

	if (parse_ulong(arg, &end, &u) < 0 || (*end && *end != ':'))
		goto bad;
	g = u;
	if (*end == ':' && (parse_ulong(end + 1, &end, &g) < 0 || *end))
		goto bad;
	if (u >= (uid_t)-1 || g >= (gid_t)-1)
		goto bad;
	*uid = (uid_t)u;
	*gid = (gid_t)g;
	return 0;
bad:
	rt_usage(err, "--user '%s' is not UID[:GID] (numeric ids)", arg);
	return -EINVAL;
}

static int parse_port_number(const char *s, size_t len, unsigned short *out)
{
	char buf[8], *end;
	unsigned long v;

	if (len == 0 || len >= sizeof buf)
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (parse_ulong(buf, &end, &v) < 0 || *end || v == 0 || v > 65535)
		return -EINVAL;
	*out = (unsigned short)v;
	return 0;
}

int strata_parse_port(const char *arg, struct strata_port *out, struct strata_error *err)
{
	const char *slash = strrchr(arg, '/');
	size_t len = slash ? (size_t)(slash - arg) : strlen(arg);
	const char *c2, *c1;

	memset(out, 0, sizeof *out);
	if (slash) {
		if (strcmp(slash + 1, "udp") == 0)
			out->udp = true;
		else if (strcmp(slash + 1, "tcp") != 0)
			goto bad;
	}
	/* from the right: CONTAINER, then HOST, then what is left is the IP */
	c2 = memrchr(arg, ':', len);
	if (!c2 || parse_port_number(c2 + 1, len - (size_t)(c2 + 1 - arg), &out->container_port) < 0)
		goto bad;
	c1 = c2 > arg ? memrchr(arg, ':', (size_t)(c2 - arg)) : NULL;
	if (c1 && arg[0] == '[' && !memchr(arg, ']', (size_t)(c1 - arg)))
		c1 = NULL; /* that colon is inside an IPv6 address */
	const char *host = c1 ? c1 + 1 : arg;
	if (parse_port_number(host, (size_t)(c2 - host), &out->host_port) < 0)
		goto bad;
	if (c1) {
		const char *ip = arg;
		size_t iplen = (size_t)(c1 - arg);
		unsigned char addr[16];
		if (iplen >= 2 && ip[0] == '[' && ip[iplen - 1] == ']') {
			ip++;
			iplen -= 2;
		}
		if (iplen == 0 || iplen >= sizeof out->host_ip)
			goto bad;
		memcpy(out->host_ip, ip, iplen);
		out->host_ip[iplen] = '\0';
		if (inet_pton(AF_INET, out->host_ip, addr) != 1 && inet_pton(AF_INET6, out->host_ip, addr) != 1)
			goto bad;
	}
	return 0;
bad:
	memset(out, 0, sizeof *out);
	rt_usage(err, "--publish '%s' is not [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp] with ports 1-65535"
		" (e.g. 127.0.0.1:8080:80)", arg);
	return -EINVAL;
}

/* A decimal number with an optional fraction: "1.5" -> 15 with scale 10.
 * Exact (no floating point): the limits are written to the kernel as
 * integers and must be what the user typed. */
static int parse_decimal(const char *s, const char **end, unsigned long long *mant, unsigned long long *scale)
{
	unsigned long long m = 0, sc = 1;
	bool digits = false, dot = false;

	for (; *s; s++) {
		if (*s == '.' && !dot) {
			dot = true;
			continue;
		}
		if (!isdigit((unsigned char)*s))
			break;
		if (m > (ULLONG_MAX - 9) / 10 || (dot && sc > ULLONG_MAX / 10))
			return -ERANGE;
		m = m * 10 + (unsigned long long)(*s - '0');
		if (dot)
			sc *= 10;
		digits = true;
	}
	if (!digits)
		return -EINVAL;
	*end = s;
	*mant = m;
	*scale = sc;
	return 0;
}

int strata_parse_size(const char *arg, long long *bytes, struct strata_error *err)
{
	unsigned long long m, sc, unit = 1;
	const char *end;

	if (strcmp(arg, "-1") == 0) {
		*bytes = -1;
		return 0;
	}
	if (parse_decimal(arg, &end, &m, &sc) < 0)
		goto bad;
	switch (tolower((unsigned char)*end)) {
	case 'b': unit = 1; break;
	case 'k': unit = 1ULL << 10; break;
	case 'm': unit = 1ULL << 20; break;
	case 'g': unit = 1ULL << 30; break;
	case 't': unit = 1ULL << 40; break;
	case '\0': break;
	default: goto bad;
	}
	if (*end) {
		end++;
		/* "512mb", "1GiB" as docker takes them */
		if (unit > 1 && tolower((unsigned char)end[0]) == 'i' && tolower((unsigned char)end[1]) == 'b')
			end += 2;
		else if (unit > 1 && tolower((unsigned char)*end) == 'b')
			end++;
		if (*end)
			goto bad;
	}
	if (m > (unsigned long long)LLONG_MAX / unit)
		goto bad;
	unsigned long long v = m * unit / sc;
	if (v == 0 || v > (unsigned long long)LLONG_MAX)
		goto bad;
	*bytes = (long long)v;
	return 0;
bad:
	rt_usage(err, "size '%s' is not a positive number of bytes with an optional unit b, k, m, g or t "
		"(e.g. 512m, 1.5g), or -1 for unlimited", arg);
	return -EINVAL;
}

int strata_parse_cpus(const char *arg, long long *quota_us, long long *period_us,
		      struct strata_error *err)
{
	const long long period = 100000;
	unsigned long long m, sc;
	const char *end;

	if (parse_decimal(arg, &end, &m, &sc) < 0 || *end || m > (unsigned long long)LLONG_MAX / period)
		goto bad;
	long long quota = (long long)(m * (unsigned long long)period / sc);
	/* the kernel's smallest quota is 1 ms */
	if (quota < 1000)
		goto bad;
	*quota_us = quota;
	*period_us = period;
	return 0;
bad:
	rt_usage(err, "--cpus '%s' is not a number of CPUs of at least 0.01 (e.g. 1.5)", arg);
	return -EINVAL;
}
