"""Shared harness for the tests of the `strata` command (tests/tools/).

Every test gets its own mktemp directory holding the store and its inputs,
and runs strata either as root or, with --user, as the unprivileged user
strata-test (created when missing) with the store in that directory.
Images with exactly the quirks a test needs are built here by hand: tar
layers through tarfile (patched where tarfile is too tidy), OCI layouts with
real sha256 digests.
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testlib import SKIP, USER, Fail, Skip, check, ensure_user, sanitizer_report  # noqa: E402,F401

BUSYBOX = '/bin/busybox'


def sha(data):
    return 'sha256:' + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- tars

def entry(name, kind='file', data=b'', mode=None, uid=0, gid=0, target=None, dev=(0, 0), mtime=1000, xattrs=None):
    """One tar member description for make_tar."""
    return dict(name=name, kind=kind, data=data, mode=mode, uid=uid, gid=gid, target=target,
                dev=dev, mtime=mtime, xattrs=xattrs or {})


def make_tar(entries, footer=True, pad_last=True, type_bits_in_mode=False):
    """Build a layer tar. footer=False drops the end-of-archive blocks;
    pad_last=False also drops the last member's block padding (what umoci
    0.4.7 insert writes). type_bits_in_mode writes S_IFMT bits into the mode
    field as some producers do."""
    buf = io.BytesIO()
    pax = any(e['xattrs'] for e in entries)
    t = tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT)
    offsets = []
    for e in entries:
        ti = tarfile.TarInfo(e['name'])
        ti.uid, ti.gid, ti.mtime = e['uid'], e['gid'], e['mtime']
        if e['xattrs']:
            ti.pax_headers = {'SCHILY.xattr.' + k: v for k, v in e['xattrs'].items()}
        k = e['kind']
        data = None
        if k == 'file':
            ti.type = tarfile.REGTYPE
            ti.size = len(e['data'])
            ti.mode = 0o644 if e['mode'] is None else e['mode']
            data = io.BytesIO(e['data'])
        elif k == 'dir':
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755 if e['mode'] is None else e['mode']
        elif k == 'symlink':
            ti.type = tarfile.SYMTYPE
            ti.linkname = e['target']
            ti.mode = 0o777
        elif k == 'hardlink':
            ti.type = tarfile.LNKTYPE
            ti.linkname = e['target']
            ti.mode = 0o644
        elif k in ('chr', 'blk', 'fifo'):
            ti.type = {'chr': tarfile.CHRTYPE, 'blk': tarfile.BLKTYPE, 'fifo': tarfile.FIFOTYPE}[k]
            ti.devmajor, ti.devminor = e['dev']
            ti.mode = 0o644 if e['mode'] is None else e['mode']
        offsets.append(buf.tell())
        t.addfile(ti, data)
    end_of_data = buf.tell()
    t.close()
    raw = bytearray(buf.getvalue())
    if type_bits_in_mode:
        for off, e in zip(offsets, entries):
            typ = {'file': stat.S_IFREG, 'dir': stat.S_IFDIR, 'symlink': stat.S_IFLNK}.get(e['kind'])
            if typ is None:
                continue
            mode = (0o644 if e['kind'] == 'file' else 0o755) if e['mode'] is None else e['mode']
            raw[off + 100:off + 108] = b'%07o\0' % (typ | mode)
            raw[off + 148:off + 156] = b'        '
            csum = sum(raw[off:off + 512])
            raw[off + 148:off + 156] = b'%06o\0 ' % csum
    if not footer:
        raw = raw[:end_of_data]
        if not pad_last and entries and entries[-1]['kind'] == 'file':
            last = len(entries[-1]['data'])
            if last % 512:
                raw = raw[:len(raw) - (512 - last % 512)]
    return bytes(raw)


def gz(data):
    return gzip.compress(data, mtime=0)


def zst(data):
    r = subprocess.run(['zstd', '-q', '-c'], input=data, stdout=subprocess.PIPE, check=True)
    return r.stdout


MT = {
    'tar': 'application/vnd.oci.image.layer.v1.tar',
    'gzip': 'application/vnd.oci.image.layer.v1.tar+gzip',
    'zstd': 'application/vnd.oci.image.layer.v1.tar+zstd',
}


def busybox_layer():
    """A layer with busybox as /bin/sh and friends."""
    with open(BUSYBOX, 'rb') as f:
        bb = f.read()
    es = [entry('bin', 'dir'), entry('bin/busybox', data=bb, mode=0o755)]
    for tool in ('sh', 'ls', 'cat', 'echo', 'id', 'rm', 'mkdir', 'test', 'chmod', 'touch', 'pwd', 'env', 'sleep', 'hostname', 'mv', 'find'):
        es.append(entry('bin/' + tool, 'symlink', target='busybox'))
    es += [entry('etc', 'dir'), entry('etc/hello', data=b'hello\n'), entry('tmp', 'dir', mode=0o1777)]
    return make_tar(es)


def oci_layout(path, layers, tag='t', history=None, config=None, mutate=None):
    """Write an OCI image layout at path. layers: list of (tar_bytes,
    compression) or (blob, mediatype, diffid) triples for hand-broken ones.
    mutate(manifest, config) may break things before digests are taken of
    the outer documents. Returns (config_digest, [diff_ids])."""
    blobs = os.path.join(path, 'blobs', 'sha256')
    os.makedirs(blobs, exist_ok=True)

    def put(data):
        d = sha(data)
        with open(os.path.join(blobs, d[7:]), 'wb') as f:
            f.write(data)
        return d

    descs, diff_ids = [], []
    for l in layers:
        if len(l) == 3:
            blob, mt, diffid = l
        else:
            tar, comp = l
            blob = {'tar': tar, 'gzip': gz(tar) if comp == 'gzip' else None,
                    'zstd': zst(tar) if comp == 'zstd' else None}[comp]
            mt, diffid = MT[comp], sha(tar)
        descs.append({'mediaType': mt, 'digest': put(blob), 'size': len(blob)})
        diff_ids.append(diffid)
    cfg = {'architecture': 'amd64', 'os': 'linux', 'created': '2024-01-01T00:00:00Z',
           'config': {'Cmd': ['/bin/sh'], 'Env': ['PATH=/bin']},
           'rootfs': {'type': 'layers', 'diff_ids': diff_ids},
           'history': history if history is not None else
           [{'created': '2024-01-01T00:00:00Z', 'created_by': 'layer %d' % i} for i in range(len(layers))]}
    if config:
        cfg['config'].update(config)
    man = {'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
           'config': None, 'layers': descs}
    if mutate:
        mutate(man, cfg)
    cbytes = json.dumps(cfg).encode()
    cd = put(cbytes)
    if man['config'] is None:
        man['config'] = {'mediaType': 'application/vnd.oci.image.config.v1+json', 'digest': cd,
                         'size': len(cbytes)}
    mbytes = json.dumps(man).encode()
    md = put(mbytes)
    index = {'schemaVersion': 2, 'manifests': [
        {'mediaType': 'application/vnd.oci.image.manifest.v1+json', 'digest': md, 'size': len(mbytes),
         'annotations': {'org.opencontainers.image.ref.name': tag}}]}
    with open(os.path.join(path, 'index.json'), 'w') as f:
        json.dump(index, f)
    with open(os.path.join(path, 'oci-layout'), 'w') as f:
        json.dump({'imageLayoutVersion': '1.0.0'}, f)
    return cd, diff_ids


# ---------------------------------------------------------------- running

# Sanitizer reports that are known false positives, as substrings of the
# report, each with the reason it is one. None is known: any report fails.
KNOWN_SANITIZER_FALSE_POSITIVES = ()


def sanitizer_check(err, args):
    """In the sanitizer build a report in a strata command's stderr fails the
    test, whichever program wrote it: strata itself, or the FUSE daemon and
    the launcher it started, which report through the same stderr."""
    what = sanitizer_report(err)
    if not what or any(fp in err for fp in KNOWN_SANITIZER_FALSE_POSITIVES):
        return
    raise Fail('%s report during strata %s:\n%s' % (what, ' '.join(args), err[-6000:]))


def layer_present(path):
    """A stored layer's path (inspect's) is there: a directory, or a packed
    layer's metadata file."""
    return os.path.isdir(path) or (path.endswith('/layer.pk') and os.path.isfile(path))


class Env:
    """A private directory with a store, and a way to run strata in it."""

    def __init__(self, strata, user=False):
        self.strata = os.path.abspath(strata)
        self.user = user
        self.dir = tempfile.mkdtemp(prefix='strata-tools-')
        os.chmod(self.dir, 0o755)
        self.store = os.path.join(self.dir, 'store')
        self.pw = ensure_user() if user else None
        if user:
            os.chown(self.dir, self.pw.pw_uid, self.pw.pw_gid)

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def give(self):
        """Inputs made by the (root) test belong to the test user."""
        if not self.user:
            return
        for root, dirs, files in os.walk(self.dir):
            if root.startswith(self.store):
                continue
            os.lchown(root, self.pw.pw_uid, self.pw.pw_gid)
            for n in files + dirs:
                os.lchown(os.path.join(root, n), self.pw.pw_uid, self.pw.pw_gid)

    def wrap(self, argv):
        if not self.user:
            return argv
        return ['setpriv', '--reuid=%d' % self.pw.pw_uid, '--regid=%d' % self.pw.pw_gid,
                '--init-groups', 'env', 'HOME=' + self.dir, 'USER=' + USER] + argv

    def env(self):
        e = dict(os.environ)
        e.pop('STRATA_STORE', None)
        if getattr(self, 'store_format', None):
            e['STRATA_STORE_FORMAT'] = self.store_format
        return e

    def run(self, *args, ok=True, input=None, timeout=120, wrap=None):
        argv = [self.strata, '--store', self.store] + list(args)
        argv = self.wrap(argv)
        if wrap:
            argv = wrap(argv)
        r = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, env=self.env(), cwd=self.dir)
        r.out = r.stdout.decode(errors='replace')
        r.err = r.stderr.decode(errors='replace')
        sanitizer_check(r.err, args)
        if ok is True and r.returncode != 0:
            raise Fail('strata %s failed (%d): %s' % (' '.join(args), r.returncode, r.err.strip()))
        if ok is False and r.returncode == 0:
            raise Fail('strata %s succeeded but should have failed' % ' '.join(args))
        return r

    def tool(self, *argv, ok=True):
        """Run another program (skopeo, umoci) as the same user."""
        r = subprocess.run(self.wrap(list(argv)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(self.env(), HOME=self.dir), cwd=self.dir, timeout=120)
        r.out = r.stdout.decode(errors='replace')
        r.err = r.stderr.decode(errors='replace')
        if ok and r.returncode:
            raise Fail('%s failed: %s' % (' '.join(argv), r.err.strip()))
        return r

    def json(self, *args):
        return json.loads(self.run(*args).out)

    def packed(self):
        """Whether new layers of this store are packed (the default; pinned
        with STRATA_STORE_FORMAT=dir)."""
        return (getattr(self, 'store_format', None) or os.environ.get('STRATA_STORE_FORMAT', 'packed')) != 'dir'

    def layer_tree(self, path):
        """A stored layer's tree (inspect's "path") as a directory: a dir
        layer's own, or a packed layer's (STORE/layers/<id>/layer.pk) unpacked
        by `strata unpack` into a fresh directory, in the encoding it was
        imported with (whiteouts, opaque markers, owners, xattrs)."""
        if os.path.isdir(path):
            return path
        self.unpacked = getattr(self, 'unpacked', 0) + 1
        d = self.path('unpacked-%d' % self.unpacked)
        self.run('unpack', path, d)
        return d

    def listing(self):
        """What a user of the store can see: everything but tmp/ and lock."""
        out = []
        if not os.path.isdir(self.store):
            return out
        for root, dirs, files in os.walk(self.store):
            rel = os.path.relpath(root, self.store)
            if rel == 'tmp' or rel.startswith('tmp/'):
                continue
            for n in sorted(files + dirs):
                p = os.path.join(root, n)
                st = os.lstat(p)
                if os.path.relpath(p, self.store) in ('lock', 'tmp'):
                    continue
                size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                content = b''
                if stat.S_ISREG(st.st_mode) and size < 65536 and n.endswith('.json'):
                    with open(p, 'rb') as f:
                        content = f.read()
                out.append((os.path.relpath(p, self.store), stat.S_IFMT(st.st_mode), size, content))
        return sorted(out)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def main(tests, argv=None):
    """Run test functions test(env) in order, each in a fresh Env.
    argv: STRATA [--user] [name...]."""
    argv = list(sys.argv[1:] if argv is None else argv)
    user = '--user' in argv
    argv = [a for a in argv if a != '--user']
    strata = argv[0]
    only = argv[1:]
    if os.geteuid() != 0:
        print('SKIP: run as root; with --user the test switches to %s itself' % USER)
        return SKIP
    if not os.access(strata, os.X_OK):
        print('SKIP: strata not built at %s' % strata)
        return SKIP
    failed = skipped = ran = 0
    for t in tests:
        if only and t.__name__ not in only:
            continue
        env = Env(strata, user)
        ran += 1
        try:
            t(env)
            print('ok   %s%s' % (t.__name__, ' (as %s)' % USER if user else ''), flush=True)
        except Fail as e:
            failed += 1
            print('FAIL %s: %s' % (t.__name__, e), flush=True)
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
            failed += 1
            print('FAIL %s: %s: %s' % (t.__name__, type(e).__name__, e), flush=True)
        except Skip as e:
            skipped += 1
            print('skip %s: %s' % (t.__name__, e), flush=True)
        finally:
            env.cleanup()
    if failed:
        return 1
    return SKIP if ran and skipped == ran else 0


def dev_wrap(env, tun=False):
    """How to run strata so that it can open /dev/fuse (and, with tun, the
    /dev/net/tun a rootless private network needs): as --user, where the
    host's nodes are root-only, private 0666 nodes bound over them in a
    mount namespace of the test's own. None when nothing is needed."""
    fs = os.path.join(os.path.dirname(env.strata), '..', 'fs', 'strata-fs')
    if not os.path.exists(fs) and not os.environ.get('STRATA_FS'):
        raise Skip('strata-fs is not built next to strata (%s)' % fs)
    if not env.user:
        return None
    nodes = []
    for dev, want in (('/dev/fuse', True), ('/dev/net/tun', tun)):
        if not want or not os.path.exists(dev):
            continue
        usable = subprocess.run(env.wrap(['sh', '-c', 'exec 3<>' + dev]), stderr=subprocess.DEVNULL).returncode == 0
        if not usable:
            nodes.append(dev)
    if not nodes:
        return None
    d = tempfile.mkdtemp(prefix='devs-', dir=env.dir)
    steps = ['mount -t tmpfs -o mode=755 strata-test-dev "$0"']
    for i, dev in enumerate(nodes):
        rdev = os.stat(dev).st_rdev
        steps.append('mknod -m 666 "$0/n%d" c %d %d && mount --bind "$0/n%d" %s'
                     % (i, os.major(rdev), os.minor(rdev), i, dev))
    script = ' && '.join(steps) + ' && exec "$@"'
    return lambda argv: ['unshare', '-m', '--propagation', 'private', 'sh', '-c', script, d] + argv
