/* lazylib: libarchive and libcrypto, loaded on first use.
 *
 * Most strata commands never read or write an archive or hash a blob:
 * run, exec, ps, stop, logs. Yet loading libarchive (with the libraries
 * Debian builds it against: libxml2, ICU, libstdc++, nettle, ...) and
 * libcrypto made every command start 10-15 ms slower than one that links
 * neither, which was most of `strata run --rm IMAGE true`'s cost over
 * strata-run alone. strata is therefore linked against neither: the
 * functions it uses are defined here with their own prototypes and each
 * forwards to the real one, looked up with dlsym() the first time it is
 * called. A function strata starts to use must be added below (the link
 * fails until it is).
 */
#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define LAZY_STR2(x) #x
#define LAZY_STR(x) LAZY_STR2(x)

struct lazy_lib {
	const char *names[3];   /* sonames, tried in order */
	const char *package;    /* what to install when none loads */
	void *handle;
};

static struct lazy_lib archive_lib = {
	{ "libarchive.so.13", "libarchive.so", NULL }, "libarchive13", NULL
};
static struct lazy_lib crypto_lib = {
	{ "libcrypto.so." LAZY_STR(OPENSSL_VERSION_MAJOR), "libcrypto.so", NULL }, "libssl3", NULL
};

/* A missing library or symbol is a broken installation, not an error a
 * caller could handle: say what to install and stop, as the dynamic
 * loader would have at startup. */
static void *lazy_sym(struct lazy_lib *lib, const char *name)
{
	void *h = __atomic_load_n(&lib->handle, __ATOMIC_ACQUIRE);
	if (!h) {
		for (int i = 0; i < 3 && lib->names[i] && !h; i++)
			h = dlopen(lib->names[i], RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			fprintf(stderr, "strata: load %s: %s (install the Debian package %s)\n", lib->names[0],
				dlerror(), lib->package);
			exit(125);
		}
		__atomic_store_n(&lib->handle, h, __ATOMIC_RELEASE);
	}
	void *f = dlsym(h, name);
	if (!f) {
		fprintf(stderr, "strata: load %s from %s: %s (the installed library is too old)\n", name,
			lib->names[0], dlerror());
		exit(125);
	}
	return f;
}

#define LAZY(lib, ret, name, params, args)                                      \
	ret name params                                                         \
	{                                                                       \
		static ret(*fn) params;                                         \
		ret(*real) params = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);     \
		if (!real) {                                                    \
			real = (ret(*) params)lazy_sym(&lib, #name);            \
			__atomic_store_n(&fn, real, __ATOMIC_RELEASE);          \
		}                                                               \
		return real args;                                               \
	}
#define LAZYV(lib, name, params, args)                                          \
	void name params                                                        \
	{                                                                       \
		static void(*fn) params;                                        \
		void(*real) params = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);    \
		if (!real) {                                                    \
			real = (void(*) params)lazy_sym(&lib, #name);           \
			__atomic_store_n(&fn, real, __ATOMIC_RELEASE);          \
		}                                                               \
		real args;                                                      \
	}

typedef struct archive A;
typedef struct archive_entry E;

/* ---------------------------------------------------------------- libarchive */

LAZY(archive_lib, A *, archive_read_new, (void), ())
LAZY(archive_lib, A *, archive_write_new, (void), ())
LAZY(archive_lib, int, archive_read_free, (A *a), (a))
LAZY(archive_lib, int, archive_write_free, (A *a), (a))
LAZY(archive_lib, int, archive_write_close, (A *a), (a))
LAZY(archive_lib, int, archive_errno, (A *a), (a))
LAZY(archive_lib, const char *, archive_error_string, (A *a), (a))
LAZY(archive_lib, int, archive_filter_code, (A *a, int n), (a, n))
LAZY(archive_lib, la_ssize_t, archive_read_data, (A *a, void *b, size_t n), (a, b, n))
LAZY(archive_lib, int, archive_read_data_block, (A *a, const void **b, size_t *n, la_int64_t *o), (a, b, n, o))
LAZY(archive_lib, int, archive_read_next_header, (A *a, E **e), (a, e))
LAZY(archive_lib, int, archive_read_open,
     (A *a, void *d, archive_open_callback *o, archive_read_callback *r, archive_close_callback *c), (a, d, o, r, c))
LAZY(archive_lib, int, archive_read_open_fd, (A *a, int fd, size_t bs), (a, fd, bs))
LAZY(archive_lib, int, archive_read_support_filter_all, (A *a), (a))
LAZY(archive_lib, int, archive_read_support_filter_gzip, (A *a), (a))
LAZY(archive_lib, int, archive_read_support_filter_zstd, (A *a), (a))
LAZY(archive_lib, int, archive_read_support_format_gnutar, (A *a), (a))
LAZY(archive_lib, int, archive_read_support_format_raw, (A *a), (a))
LAZY(archive_lib, int, archive_read_support_format_tar, (A *a), (a))
LAZY(archive_lib, int, archive_write_add_filter_gzip, (A *a), (a))
LAZY(archive_lib, la_ssize_t, archive_write_data, (A *a, const void *b, size_t n), (a, b, n))
LAZY(archive_lib, int, archive_write_header, (A *a, E *e), (a, e))
LAZY(archive_lib, int, archive_write_open_fd, (A *a, int fd), (a, fd))
LAZY(archive_lib, int, archive_write_open_filename, (A *a, const char *f), (a, f))
LAZY(archive_lib, int, archive_write_set_bytes_in_last_block, (A *a, int n), (a, n))
LAZY(archive_lib, int, archive_write_set_format_pax_restricted, (A *a), (a))

/* libarchive has no va_list variant: the message is formatted here. */
void archive_set_error(A *a, int err, const char *fmt, ...)
{
	static void (*fn)(A *, int, const char *, ...);
	void (*f)(A *, int, const char *, ...) = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
	if (!f) {
		f = (void (*)(A *, int, const char *, ...))lazy_sym(&archive_lib, "archive_set_error");
		__atomic_store_n(&fn, f, __ATOMIC_RELEASE);
	}
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	f(a, err, "%s", msg);
}

LAZY(archive_lib, E *, archive_entry_new, (void), ())
LAZYV(archive_lib, archive_entry_free, (E *e), (e))
LAZY(archive_lib, time_t, archive_entry_atime, (E *e), (e))
LAZY(archive_lib, int, archive_entry_atime_is_set, (E *e), (e))
LAZY(archive_lib, long, archive_entry_atime_nsec, (E *e), (e))
LAZYV(archive_lib, archive_entry_copy_stat, (E *e, const struct stat *st), (e, st))
LAZY(archive_lib, __LA_MODE_T, archive_entry_filetype, (E *e), (e))
LAZY(archive_lib, la_int64_t, archive_entry_gid, (E *e), (e))
LAZY(archive_lib, la_int64_t, archive_entry_uid, (E *e), (e))
LAZY(archive_lib, const char *, archive_entry_hardlink, (E *e), (e))
LAZY(archive_lib, time_t, archive_entry_mtime, (E *e), (e))
LAZY(archive_lib, long, archive_entry_mtime_nsec, (E *e), (e))
LAZY(archive_lib, const char *, archive_entry_pathname, (E *e), (e))
LAZY(archive_lib, __LA_MODE_T, archive_entry_perm, (E *e), (e))
LAZY(archive_lib, dev_t, archive_entry_rdevmajor, (E *e), (e))
LAZY(archive_lib, dev_t, archive_entry_rdevminor, (E *e), (e))
LAZY(archive_lib, la_int64_t, archive_entry_size, (E *e), (e))
LAZY(archive_lib, int, archive_entry_size_is_set, (E *e), (e))
LAZY(archive_lib, const char *, archive_entry_symlink, (E *e), (e))
LAZYV(archive_lib, archive_entry_set_filetype, (E *e, unsigned int t), (e, t))
LAZYV(archive_lib, archive_entry_set_gname, (E *e, const char *s), (e, s))
LAZYV(archive_lib, archive_entry_set_uname, (E *e, const char *s), (e, s))
LAZYV(archive_lib, archive_entry_set_hardlink, (E *e, const char *s), (e, s))
LAZYV(archive_lib, archive_entry_set_pathname, (E *e, const char *s), (e, s))
LAZYV(archive_lib, archive_entry_set_symlink, (E *e, const char *s), (e, s))
LAZYV(archive_lib, archive_entry_set_mtime, (E *e, time_t t, long ns), (e, t, ns))
LAZYV(archive_lib, archive_entry_set_perm, (E *e, __LA_MODE_T m), (e, m))
LAZYV(archive_lib, archive_entry_set_size, (E *e, la_int64_t n), (e, n))
LAZYV(archive_lib, archive_entry_unset_atime, (E *e), (e))
LAZYV(archive_lib, archive_entry_unset_birthtime, (E *e), (e))
LAZYV(archive_lib, archive_entry_unset_ctime, (E *e), (e))
LAZYV(archive_lib, archive_entry_xattr_add_entry, (E *e, const char *n, const void *v, size_t s), (e, n, v, s))
LAZY(archive_lib, int, archive_entry_xattr_next, (E *e, const char **n, const void **v, size_t *s), (e, n, v, s))
LAZY(archive_lib, int, archive_entry_xattr_reset, (E *e), (e))

/* ---------------------------------------------------------------- libcrypto */

LAZY(crypto_lib, EVP_MD_CTX *, EVP_MD_CTX_new, (void), ())
LAZYV(crypto_lib, EVP_MD_CTX_free, (EVP_MD_CTX *c), (c))
LAZY(crypto_lib, const EVP_MD *, EVP_sha256, (void), ())
LAZY(crypto_lib, int, EVP_DigestInit_ex, (EVP_MD_CTX *c, const EVP_MD *t, ENGINE *e), (c, t, e))
LAZY(crypto_lib, int, EVP_DigestUpdate, (EVP_MD_CTX *c, const void *d, size_t n), (c, d, n))
LAZY(crypto_lib, int, EVP_DigestFinal_ex, (EVP_MD_CTX *c, unsigned char *md, unsigned int *n), (c, md, n))
