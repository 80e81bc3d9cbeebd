/* Capabilities the command keeps: docker's default set, edited by
 * --cap-drop then --cap-add. The bounding set is cut before the uid
 * changes (CAP_SETPCAP is still there), the process sets after it. */
#include "internal.h"
#include "err.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#define BIT(c) (UINT64_C(1) << (c))

static const uint64_t default_caps =
	BIT(CAP_CHOWN) | BIT(CAP_DAC_OVERRIDE) | BIT(CAP_FSETID) | BIT(CAP_FOWNER) |
	BIT(CAP_MKNOD) | BIT(CAP_NET_RAW) | BIT(CAP_SETGID) | BIT(CAP_SETUID) |
	BIT(CAP_SETFCAP) | BIT(CAP_SETPCAP) | BIT(CAP_NET_BIND_SERVICE) |
	BIT(CAP_SYS_CHROOT) | BIT(CAP_KILL) | BIT(CAP_AUDIT_WRITE);

/* Accepts "NET_ADMIN", "net_admin" and "CAP_NET_ADMIN". */
static int cap_parse(const char *name, cap_value_t *out, struct strata_error *err)
{
	char buf[64];
	size_t n = strlen(name);

	if (n + 4 >= sizeof buf)
		goto bad;
	if (strncasecmp(name, "cap_", 4) != 0) {
		memcpy(buf, "cap_", 4);
		memcpy(buf + 4, name, n + 1);
	} else {
		memcpy(buf, name, n + 1);
	}
	for (char *p = buf; *p; p++)
		*p = tolower((unsigned char)*p);
	if (cap_from_name(buf, out) == 0 && *out >= 0 && *out < 64)
		return 0;
bad:
	return rt_usage(err, "unknown capability '%s' (names as in capabilities(7), e.g. NET_ADMIN "
			"or ALL for --cap-drop)", name);
}

int caps_resolve(const struct strata_launch_spec *spec, uint64_t *set, struct strata_error *err)
{
	uint64_t s = default_caps;
	cap_value_t c;
	int r;

	for (size_t i = 0; i < spec->n_cap_drop; i++) {
		if (strcasecmp(spec->cap_drop[i], "ALL") == 0) {
			s = 0;
			continue;
		}
		if ((r = cap_parse(spec->cap_drop[i], &c, err)) < 0)
			return r;
		s &= ~BIT(c);
	}
	for (size_t i = 0; i < spec->n_cap_add; i++) {
		if (strcasecmp(spec->cap_add[i], "ALL") == 0) {
			s = ~UINT64_C(0);
			continue;
		}
		if ((r = cap_parse(spec->cap_add[i], &c, err)) < 0)
			return r;
		s |= BIT(c);
	}
	*set = s;
	return 0;
}

int caps_limit_bounding(uint64_t set, struct strata_error *err)
{
	cap_value_t last = cap_max_bits() - 1;

	for (cap_value_t c = 0; c <= last; c++) {
		if (set & BIT(c))
			continue;
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			return rt_err(err, errno, "drop capability from bounding set", NULL,
				      "capability number %d", (int)c);
	}
	return 0;
}

/* After the uid change: permitted and effective are the set for uid 0
 * and empty otherwise (setuid already cleared them); inheritable and
 * ambient stay empty, as in docker since CVE-2022-24769. */
int caps_apply(uint64_t set, struct strata_error *err)
{
	cap_t caps = cap_init();
	cap_value_t last = cap_max_bits() - 1;
	int r = 0;

	if (!caps)
		return rt_err(err, errno, "set capabilities", NULL, "cap_init");
	if (geteuid() == 0) {
		for (cap_value_t c = 0; c <= last; c++) {
			if (!(set & BIT(c)))
				continue;
			cap_set_flag(caps, CAP_PERMITTED, 1, &c, CAP_SET);
			cap_set_flag(caps, CAP_EFFECTIVE, 1, &c, CAP_SET);
		}
	}
	if (cap_set_proc(caps) < 0) {
		r = rt_err(err, errno, "set capabilities", NULL, NULL);
	} else if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) {
		r = rt_err(err, errno, "clear ambient capabilities", NULL, NULL);
	}
	cap_free(caps);
	return r;
}
