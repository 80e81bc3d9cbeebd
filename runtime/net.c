/* A fresh network namespace starts with loopback down; --net none means
 * "loopback only", so bring it up. */
#include "internal.h"
#include "err.h"

#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

int net_loopback_up(void)
{
	_cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr;

	if (s < 0) {
		serr(errno, "socket", "AF_INET", "needed to bring up loopback");
		return -errno;
	}
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0 ||
	    (ifr.ifr_flags |= IFF_UP | IFF_RUNNING, ioctl(s, SIOCSIFFLAGS, &ifr) < 0)) {
		int e = errno;
		serr(e, "bring up", "lo", "in the container's network namespace");
		return -e;
	}
	return 0;
}
