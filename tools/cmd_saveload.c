/* save and load: docker's names for writing an image to a docker-archive
 * and reading one back, with the names the archive carries. */
#include "cli.h"

#include "err.h"
#include "fsutil.h"
#include "image.h"
#include "store.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A name of the image the store knows: the one given, else one pointing at
 * the same image (a docker-archive names its image; an ID is no name). */
static int save_name(struct store *s, const char *image, const char *digest, char **name)
{
	json_t *tags;
	int r = store_tags(s, &tags);
	if (r < 0)
		return r;
	_cleanup_free_ char *norm = ref_normalize(image);
	const char *k;
	json_t *v;
	*name = NULL;
	if (norm && json_object_get(tags, norm)) {
		*name = TAKE_PTR(norm);
	} else {
		json_object_foreach(tags, k, v)
			if (!strcmp(json_string_value(v), digest)) {
				*name = strdup(k);
				break;
			}
	}
	json_decref(tags);
	if (!*name) {
		susage("save: image %s has no name, and a docker-archive names its image: "
		       "give it one first with strata tag %s NAME:TAG", image, image);
		return -EINVAL;
	}
	return 0;
}

int cmd_save(const char *root, int argc, char **argv)
{
	const char *out = NULL, *image = NULL, *format = "docker-archive";
	for (int i = 0; i < argc; i++) {
		if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
			out = argv[++i];
		} else if (!strncmp(argv[i], "--output=", 9)) {
			out = argv[i] + 9;
		} else if (!strcmp(argv[i], "--format") && i + 1 < argc) {
			format = argv[++i];
		} else if (!strncmp(argv[i], "--format=", 9)) {
			format = argv[i] + 9;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			susage("save: unknown option %s (usage: strata save [-o FILE] [--format docker-archive|oci-archive] IMAGE)", argv[i]);
			return 2;
		} else if (image) {
			susage("save: one image per archive (usage: strata save [-o FILE] IMAGE)");
			return 2;
		} else {
			image = argv[i];
		}
	}
	if (!image) {
		susage("usage: strata save [-o FILE] [--format docker-archive|oci-archive] IMAGE");
		return 2;
	}
	enum spec_kind kind;
	if (!strcmp(format, "docker-archive"))
		kind = SPEC_DOCKER_ARCHIVE;
	else if (!strcmp(format, "oci-archive"))
		kind = SPEC_OCI_ARCHIVE;
	else {
		susage("save: --format %s: use docker-archive or oci-archive", format);
		return 2;
	}
	if (!out && isatty(STDOUT_FILENO)) {
		susage("save: refusing to write an archive to a terminal; use -o FILE or redirect the output");
		return 2;
	}
	/* A shared lock while the archive is written (the image's layers must
	 * stay), none while it is copied to an output that may block. */
	struct store s;
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	char digest[DIGEST_BUF], tmpname[64] = "", path[PATH_MAX];
	_cleanup_free_ char *name = NULL;
	_cleanup_close_ int tfd = -1, fd = -1;
	if ((r = store_resolve(&s, image, digest)) < 0 || (r = save_name(&s, image, digest, &name)) < 0)
		goto done;
	if (!out) {
		if ((tfd = store_mktemp(&s, tmpname)) < 0) {
			r = tfd;
			tmpname[0] = '\0';
			serr(r, "save: create a temporary directory in", s.root, "check free space and permissions of the store");
			goto done;
		}
		snprintf(path, sizeof path, "%s/%s/archive.tar", s.root, tmpname);
	} else {
		snprintf(path, sizeof path, "%s", out);
	}
	struct spec sp = { .kind = kind, .path = path };
	if ((r = image_export(&s, digest, name, &sp)) < 0 || out)
		goto done;
	store_unlock(&s);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	long long n = fd < 0 ? -errno : copy_fd(fd, STDOUT_FILENO);
	if (n < 0) {
		r = (int)n;
		serr(r, "save: write the archive to", "standard output", "check where the output goes and its free space");
	}
done:
	if (tmpname[0])
		rm_rf_at(s.fd, tmpname);
	store_close(&s);
	return r;
}

#define MANIFEST_MAX (4 << 20)

/* manifest.json of a docker-archive, read with a size bound: the archive
 * is hostile. */
static int read_manifest(const char *path, const char *shown, char **buf, size_t *len)
{
	struct stat st;
	*buf = NULL;
	/* Only a regular file: a FIFO would be used up by this first read
	 * (import reads the archive again), a device could feed us forever. */
	_cleanup_close_ int fd = open_regular(AT_FDCWD, path, true, false, &st);
	if (fd == -EINVAL) {
		serr(0, "load: read", shown, "it is %s, not a file; save the archive to a file, or pipe it to strata load",
		     file_kind(st.st_mode));
		return fd;
	}
	if (fd < 0) {
		serr(fd, "load: open", shown, "check the path and its permissions");
		return fd;
	}
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	int r = -ENOENT;
	archive_read_support_format_tar(a);
	if (archive_read_open_fd(a, fd, 1 << 16) != ARCHIVE_OK) {
		r = archive_errno(a) > 0 ? -archive_errno(a) : -EIO;
		serr(r, "load: open", shown, "%s", archive_error_string(a) ? archive_error_string(a) : "not a tar archive");
		archive_read_free(a);
		return r;
	}
	int ar;
	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		const char *n = archive_entry_pathname(e);
		if (!n || (strcmp(n, "manifest.json") && strcmp(n, "./manifest.json")))
			continue;
		la_int64_t size = archive_entry_size(e);
		if (archive_entry_filetype(e) != AE_IFREG || size < 0 || size > MANIFEST_MAX) {
			serr(0, "load: read manifest.json in", shown, "it is not a regular file of at most %d bytes",
			     MANIFEST_MAX);
			r = -EBADMSG;
			break;
		}
		*buf = malloc((size_t)size + 1);
		if (!*buf) {
			r = -ENOMEM;
			break;
		}
		la_ssize_t got = archive_read_data(a, *buf, (size_t)size);
		if (got != size) {
			serr(0, "load: read manifest.json in", shown, "the archive is truncated or corrupt");
			r = -EBADMSG;
			break;
		}
		(*buf)[size] = '\0';
		*len = (size_t)size;
		r = 0;
		break;
	}
	if (r == -ENOENT) {
		if (ar == ARCHIVE_EOF)
			serr(0, "load: read", shown, "no manifest.json: not a docker-archive (an OCI archive imports with "
			     "strata import oci-archive:FILE NAME:TAG)");
		else
			serr(0, "load: read", shown, "%s", archive_error_string(a) ? archive_error_string(a) : "not a tar archive");
		r = ar == ARCHIVE_EOF ? -ENOENT : -EBADMSG;
	}
	archive_read_free(a);
	if (r < 0) {
		free(*buf);
		*buf = NULL;
	}
	return r;
}

/* Import each image of a docker-archive under every name it carries. */
static int load_archive(struct store *s, const char *path, const char *shown, bool quiet)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	int r = read_manifest(path, shown, &buf, &len);
	if (r < 0)
		return r;
	json_t *man = json_loadb(buf, len, 0, NULL);
	if (!json_is_array(man) || json_array_size(man) == 0) {
		serr(0, "load: read manifest.json in", shown, "expected a non-empty JSON list as docker save writes; "
		     "is it a docker-archive?");
		json_decref(man);
		return -EBADMSG;
	}
	size_t i;
	json_t *m;
	json_array_foreach(man, i, m) {
		json_t *tags = json_object_get(m, "RepoTags");
		if (!json_is_array(tags) || json_array_size(tags) == 0 || !json_is_string(json_array_get(tags, 0))) {
			serr(0, "load: image", shown, "entry %zu of manifest.json has no name; import it with "
			     "strata import docker-archive:FILE NAME:TAG", i);
			r = -EBADMSG;
			break;
		}
		char digest[DIGEST_BUF] = "";
		size_t q;
		json_t *t;
		json_array_foreach(tags, q, t) {
			struct image_ref ref;
			const char *tag = json_string_value(t);
			if (!tag || image_ref_parse(tag, &ref) < 0) {
				serr(0, "load: image", shown, "entry %zu of manifest.json has a name that is not a reference", i);
				r = -EBADMSG;
				break;
			}
			_cleanup_free_ char *local = ref.digest ? NULL : image_ref_familiar(&ref);
			image_ref_free(&ref);
			if (!local) {
				serr(0, "load: image", shown, "'%s' in manifest.json names a digest, not a tag", tag);
				r = -EBADMSG;
				break;
			}
			if (q == 0) {
				struct spec sp = { .kind = SPEC_DOCKER_ARCHIVE, .path = (char *)path, .ref = (char *)tag };
				r = image_import(s, &sp, local, digest);
			} else {
				r = store_set_tag(s, local, digest);
			}
			if (r < 0)
				break;
			if (!quiet)
				printf("Loaded image: %s\n", local);
		}
		if (r < 0)
			break;
	}
	json_decref(man);
	return r;
}

int cmd_load(const char *root, int argc, char **argv)
{
	const char *in = NULL;
	bool quiet = false;
	for (int i = 0; i < argc; i++) {
		if ((!strcmp(argv[i], "-i") || !strcmp(argv[i], "--input")) && i + 1 < argc) {
			in = argv[++i];
		} else if (!strncmp(argv[i], "--input=", 8)) {
			in = argv[i] + 8;
		} else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
			quiet = true;
		} else {
			susage("load: unexpected argument %s (usage: strata load [-i FILE] [-q])", argv[i]);
			return 2;
		}
	}
	if (!in && isatty(STDIN_FILENO)) {
		susage("load: no archive: use -i FILE or redirect one to the input");
		return 2;
	}
	/* No store lock while the input is read (a pipe may take its time):
	 * tmp/ work is this process's own, and import locks to commit. */
	struct store s;
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	store_unlock(&s);
	char tmpname[64] = "", path[PATH_MAX];
	_cleanup_close_ int tfd = -1;
	if (!in) {
		/* The archive is read in several passes: keep a copy of the
		 * stream in tmp/. */
		if ((tfd = store_mktemp(&s, tmpname)) < 0) {
			r = tfd;
			tmpname[0] = '\0';
			serr(r, "load: create a temporary directory in", s.root, "check free space and permissions of the store");
			goto done;
		}
		snprintf(path, sizeof path, "%s/%s/archive.tar", s.root, tmpname);
		_cleanup_close_ int fd = openat(tfd, "archive.tar", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		long long n = fd < 0 ? -errno : copy_fd(STDIN_FILENO, fd);
		if (n < 0) {
			r = (int)n;
			serr(r, "load: copy standard input to", path, "check free space of the store");
			goto done;
		}
	} else {
		snprintf(path, sizeof path, "%s", in);
	}
	r = load_archive(&s, path, in ? in : "(standard input)", quiet);
done:
	if (tmpname[0])
		rm_rf_at(s.fd, tmpname);
	store_close(&s);
	return r;
}
