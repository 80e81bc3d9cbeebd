#!/usr/bin/env python3
"""strata pull, push, login, logout, save and load against a real registry.

Each test starts its own registry (Debian's docker-registry) on 127.0.0.1
at a free port, with its storage in the test's directory, and stops it by
pid at the end. Images go out of one store and into a fresh one, and must
keep their image ID (the config digest) and run. podman (as root, with its
whole state in the test's directory) pulls and runs what strata pushed, and
strata pulls and runs what podman pushed.

usage: test_registry.py STRATA [--user] [TEST...]"""
import base64
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import (Fail, Skip, check, main, BUSYBOX)
from test_containers import fuse_wrap

REGISTRY = '/usr/bin/docker-registry'
DEADLINE = 60 * float(os.environ.get('STRATA_TEST_SCALE', '1'))

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE, MS_BIND = 0x4000, 1 << 18, 0x1000


def need(tool):
    if not shutil.which(tool):
        raise Skip('%s is not installed (scripts/setup.sh installs it)' % tool)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def bcrypt(password):
    """A bcrypt hash for docker-registry's htpasswd file, from libxcrypt
    (python's crypt module is going away; htpasswd is not installed)."""
    try:
        lc = ctypes.CDLL('libcrypt.so.1')
    except OSError as e:
        raise Skip('libcrypt.so.1 (for a bcrypt password hash): %s' % e)
    lc.crypt_gensalt.restype = ctypes.c_char_p
    lc.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lc.crypt.restype = ctypes.c_char_p
    lc.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    # Cost 4, bcrypt's least: the registry checks the hash on every request.
    salt = lc.crypt_gensalt(b'$2b$', 4, None, 0)
    h = salt and lc.crypt(password.encode(), salt)
    if not h or not h.startswith(b'$2b$'):
        raise Skip('libcrypt made no bcrypt hash here')
    return h.decode()


class Registry:
    """docker-registry on 127.0.0.1, its storage and config in dir."""

    def __init__(self, dir, users=None, access=False):
        need(REGISTRY)
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        auth = ''
        if users:
            with open(os.path.join(dir, 'htpasswd'), 'w') as f:
                for u, p in users.items():
                    f.write('%s:%s\n' % (u, bcrypt(p)))
            auth = 'auth:\n  htpasswd:\n    realm: strata-test\n    path: %s\n' % os.path.join(dir, 'htpasswd')
        for attempt in range(3):
            self.port = free_port()
            self.host = '127.0.0.1:%d' % self.port
            cfg = os.path.join(dir, 'config.yml')
            with open(cfg, 'w') as f:
                f.write('version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: %s\n'
                        'storage:\n  filesystem:\n    rootdirectory: %s\n'
                        'http:\n  addr: %s\n  secret: strata-test-secret\n%s'
                        % ('false' if access else 'true', os.path.join(dir, 'data'), self.host, auth))
            self.log = open(os.path.join(dir, 'log'), 'wb')
            # It ends with this test even when the test is killed.
            self.proc = subprocess.Popen([REGISTRY, 'serve', cfg], stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=subprocess.STDOUT,
                                         preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0))
            if self.wait_ready():
                return
            self.stop()
        raise Fail('docker-registry did not start; its log:\n' + self.log_text())

    def wait_ready(self):
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False        # e.g. the port was taken meanwhile
            try:
                urllib.request.urlopen('http://%s/v2/' % self.host, timeout=5)
                return True
            except urllib.error.HTTPError as e:
                return e.code == 401    # up, and wants credentials
            except OSError:
                time.sleep(0.1)
        return False

    def log_text(self):
        try:
            with open(os.path.join(self.dir, 'log'), errors='replace') as f:
                return f.read()[-3000:]
        except OSError:
            return ''

    def blob_gets(self):
        """The blob digests fetched so far (GET requests of the access
        log, in order; access=True)."""
        got = []
        with open(os.path.join(self.dir, 'log'), errors='replace') as f:
            for line in f:
                m = re.search(r'"GET /v2/\S+/blobs/(sha256:[0-9a-f]{64}) ', line)
                if m:
                    got.append(m.group(1))
        return got

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- helpers

def make_image(env, name, message):
    """A small image from busybox, through strata import rootfs:DIR."""
    root = env.path('rootfs-' + message)
    os.makedirs(os.path.join(root, 'bin'))
    os.makedirs(os.path.join(root, 'etc'))
    shutil.copy2(BUSYBOX, os.path.join(root, 'bin', 'busybox'))
    os.symlink('busybox', os.path.join(root, 'bin', 'sh'))
    with open(os.path.join(root, 'etc', 'message'), 'w') as f:
        f.write(message + '\n')
    env.give()
    return env.run('import', 'rootfs:' + root, name).out.strip()


def other_store(env, name):
    """Run the following strata commands against a fresh store."""
    env.store = env.path(name)


def image_id(env, image):
    return env.json('inspect', image)['id']


def tmp_empty(env):
    t = os.path.join(env.store, 'tmp')
    left = os.listdir(t) if os.path.isdir(t) else []
    check(not left, 'the store tmp/ is empty afterwards, has %r' % left)


def fuse(env):
    """How strata runs containers here: as the test user with a usable
    /dev/fuse (see test_containers)."""
    if not hasattr(env, 'fuse_wrap'):
        env.fuse_wrap = fuse_wrap(env)
    return env.fuse_wrap


def run_cat(env, image):
    r = env.run('run', '--rm', '--net', 'none', image, '--', '/bin/busybox', 'cat', '/etc/message',
                wrap=fuse(env))
    return r.out.strip()


def no_path(env, argv):
    """argv with strata started without a PATH (after setpriv)."""
    i = argv.index(env.strata)
    return argv[:i] + ['env', 'PATH=/nonexistent'] + argv[i:]


def private_auth(env):
    """Login state goes into the test's directory. As root through
    REGISTRY_AUTH_FILE; the test user has no XDG_RUNTIME_DIR, and strata
    keeps its credentials in ~/.config/containers/auth.json then."""
    base = env.env
    extra = {} if env.user else {'REGISTRY_AUTH_FILE': env.path('auth.json')}

    def e():
        d = base()
        d.pop('XDG_RUNTIME_DIR', None)
        d.pop('REGISTRY_AUTH_FILE', None)
        d.update(extra)
        return d
    env.env = e
    return env.path('.config', 'containers', 'auth.json') if env.user else env.path('auth.json')


# ---------------------------------------------------------------- tests

def test_push_pull_run(env):
    need('skopeo')
    private_auth(env)
    with Registry(env.path('registry')) as reg:
        cid = make_image(env, 'bb:1', 'pushed-by-strata')
        ref = reg.host + '/strata/bb:1'
        out = env.run('push', '--tls-verify=false', 'bb:1', ref).out.strip()
        check(out.startswith(reg.host + '/strata/bb@sha256:'), 'push prints the pulled-by-digest reference: %r' % out)
        tmp_empty(env)
        # The registry holds what strata sent: its manifest names our config.
        with urllib.request.urlopen(urllib.request.Request(
                'http://%s/v2/strata/bb/manifests/1' % reg.host,
                headers={'Accept': 'application/vnd.oci.image.manifest.v1+json,'
                                   'application/vnd.docker.distribution.manifest.v2+json'})) as r:
            man = json.load(r)
        check(man['config']['digest'] == cid, 'the registry has our config %s: %r' % (cid, man['config']))

        other_store(env, 'store2')
        pulled = env.run('pull', '--tls-verify=false', ref).out.strip()
        check(pulled == cid, 'pull gives the same image ID (%s, pushed %s)' % (pulled, cid))
        check(image_id(env, ref) == cid, 'the image is known by the name it was pulled by')
        rows = env.json('images', '--json')
        check(any(r['repository'] == reg.host + '/strata/bb' and r['tag'] == '1' for r in rows),
              'images lists %s/strata/bb:1: %r' % (reg.host, rows))
        check(run_cat(env, ref) == 'pushed-by-strata', 'the pulled image runs')
        tmp_empty(env)
        # Pulling again changes nothing.
        check(env.run('pull', '--tls-verify=false', ref).out.strip() == cid, 'a second pull, same image')

        # By digest, into yet another store.
        other_store(env, 'store3')
        check(env.run('pull', '--tls-verify=false', out).out.strip() == cid, 'pull by digest: same image')
        check(image_id(env, out) == cid, 'the image is known by its digest reference')
        check(run_cat(env, out) == 'pushed-by-strata', 'the image pulled by digest runs')
        # A tag given with a digest: the digest decides.
        d = out.split('@', 1)[1]
        check(env.run('pull', '--tls-verify=false', reg.host + '/strata/bb:nosuchtag@' + d).out.strip() == cid,
              'NAME:TAG@DIGEST pulls by the digest')
        tmp_empty(env)

        # Push without a destination: the image's own name is the reference.
        env.run('tag', out, reg.host + '/again:2')
        env.run('push', '-q', '--tls-verify=false', reg.host + '/again:2')
        other_store(env, 'store4')
        check(env.run('pull', '--tls-verify=false', reg.host + '/again:2').out.strip() == cid,
              'push IMAGE alone goes to the name IMAGE has')
        # A name without a tag is :latest, as with docker.
        env.run('tag', reg.host + '/again:2', reg.host + '/again')
        env.run('push', '--tls-verify=false', reg.host + '/again')
        with urllib.request.urlopen('http://%s/v2/again/tags/list' % reg.host) as r:
            tags = sorted(json.load(r)['tags'])
        check(tags == ['2', 'latest'], 'a push without a tag goes to :latest: %r' % tags)


def test_build_push_pull(env):
    """strata build FROM a registry image (pulled by the build), push what
    it built, pull that into a fresh store and run it: same image ID."""
    need('skopeo')
    private_auth(env)
    with Registry(env.path('registry')) as reg:
        make_image(env, 'base:1', 'base-in-registry')
        base = reg.host + '/strata/base:1'
        env.run('push', '--tls-verify=false', 'base:1', base)
        other_store(env, 'builder')
        ctx = env.path('ctx')
        os.makedirs(ctx)
        with open(os.path.join(ctx, 'Containerfile'), 'w') as f:
            f.write('FROM %s\nRUN /bin/busybox sh -c "echo built-on-base > /etc/message"\n' % base)
        env.give()
        r = env.run('build', '--tls-verify=false', '--network', 'none', '-t', 'built:1', ctx,
                    wrap=fuse(env), timeout=600)
        built = r.out.strip().splitlines()[-1]
        check(image_id(env, base) and built.startswith('sha256:'), 'the build pulled its base and made an image')
        dest = reg.host + '/strata/built:1'
        env.run('push', '--tls-verify=false', 'built:1', dest)
        tmp_empty(env)
        other_store(env, 'fresh')
        pulled = env.run('pull', '--tls-verify=false', dest).out.strip()
        check(pulled == built, 'the built image comes back with its ID (%s, built %s)' % (pulled, built))
        check(run_cat(env, dest) == 'built-on-base', 'and runs')


def manifest(reg, repo, tag):
    with urllib.request.urlopen(urllib.request.Request(
            'http://%s/v2/%s/manifests/%s' % (reg.host, repo, tag),
            headers={'Accept': 'application/vnd.oci.image.manifest.v1+json,'
                               'application/vnd.docker.distribution.manifest.v2+json'})) as r:
        return json.load(r)


def test_pull_reuses_layers(env):
    """A pull fetches only the layers the store lacks: an image on top of
    a base already pulled brings its top layer alone, and pulling it again
    fetches no layer (the registry's access log counts the blob GETs)."""
    need('skopeo')
    private_auth(env)
    with Registry(env.path('registry'), access=True) as reg:
        make_image(env, 'base:1', 'base-layer')
        ctx = env.path('ctx')
        os.makedirs(ctx)
        with open(os.path.join(ctx, 'top.txt'), 'w') as f:
            f.write('top-layer\n')
        with open(os.path.join(ctx, 'Containerfile'), 'w') as f:
            f.write('FROM base:1\nCOPY top.txt /etc/top\n')
        env.give()
        built = env.run('build', '-t', 'top:1', ctx).out.strip().splitlines()[-1]
        base, top = reg.host + '/strata/base:1', reg.host + '/strata/top:1'
        env.run('push', '-q', '--tls-verify=false', 'base:1', base)
        env.run('push', '-q', '--tls-verify=false', 'top:1', top)
        bl = [l['digest'] for l in manifest(reg, 'strata/base', '1')['layers']]
        tl = [l['digest'] for l in manifest(reg, 'strata/top', '1')['layers']]
        check(len(bl) == 1 and len(tl) == 2 and tl[0] == bl[0], 'top is base + one layer: %s %s' % (bl, tl))

        other_store(env, 'fresh')
        n = len(reg.blob_gets())
        env.run('pull', '--tls-verify=false', base)
        got = reg.blob_gets()[n:]
        check(bl[0] in got, 'the first pull fetches the base layer: %s' % got)
        n = len(reg.blob_gets())
        check(env.run('pull', '--tls-verify=false', top).out.strip() == built, 'pull gives the built image')
        got = reg.blob_gets()[n:]
        check(tl[1] in got and bl[0] not in got,
              'the image on top fetches its own layer only, not the base layer the store has: %s' % got)
        n = len(reg.blob_gets())
        env.run('pull', '--tls-verify=false', top)
        got = [d for d in reg.blob_gets()[n:] if d in tl]
        check(got == [], 'pulling it again fetches no layer: %s' % got)
        r = env.run('run', '--rm', '--net', 'none', top, '--', '/bin/busybox', 'cat', '/etc/message', '/etc/top',
                    wrap=fuse(env))
        check(r.out == 'base-layer\ntop-layer\n', 'the pulled image has both layers: %r' % r.out)
        tmp_empty(env)


def test_errors(env):
    need('skopeo')
    private_auth(env)
    with Registry(env.path('registry')) as reg:
        make_image(env, 'bb:1', 'x')
        before = env.listing()
        # Plain HTTP without --tls-verify=false: skopeo's reason and what to do.
        r = env.run('pull', reg.host + '/strata/bb:1', ok=False)
        check('--tls-verify=false' in r.err and 'HTTP' in r.err and r.err.count('\n') == 1,
              'one line naming the cause and the way out: %r' % r.err)
        r = env.run('push', 'bb:1', reg.host + '/strata/bb:1', ok=False)
        check('--tls-verify=false' in r.err, 'push says the same: %r' % r.err)
        # A tag the registry does not have.
        r = env.run('pull', '--tls-verify=false', reg.host + '/strata/nothere:1', ok=False)
        check('pull docker://%s/strata/nothere:1' % reg.host in r.err and 'check that' in r.err,
              'a missing image is named, with a hint: %r' % r.err)
        check(env.listing() == before, 'failed pulls leave the store as it was')
        tmp_empty(env)
        # Nothing listens there.
        port = free_port()
        r = env.run('pull', '--tls-verify=false', '127.0.0.1:%d/x:1' % port, ok=False)
        check('connection refused' in r.err and 'running' in r.err, 'a dead registry: %r' % r.err)
        tmp_empty(env)
        # References strata refuses before asking anyone.
        for bad in ('Busybox', 'bb:', 'bb:-x', 'a//b', reg.host + '/x@sha256:abc', '-x', 'bb:1:2/x'):
            r = env.run('pull', bad, ok=False)
            check(r.returncode == 2 and r.err.startswith('strata: '), 'pull %r is a usage error: %r' % (bad, r.err))
        r = env.run('pull', 'Bad/x', ok=False)  # capitals make a host, and '/x' is fine: a host error
        check(r.returncode != 0, 'pull Bad/x fails')
        # Push: an ID needs a destination, and a digest is no destination.
        r = env.run('push', '--tls-verify=false', image_id(env, 'bb:1')[7:19], ok=False)
        check(r.returncode == 2 and 'image ID' in r.err, 'push ID without REF: %r' % r.err)
        r = env.run('push', '--tls-verify=false', 'bb:1', reg.host + '/x@sha256:' + 'a' * 64, ok=False)
        check(r.returncode == 2 and 'digest' in r.err, 'push to a digest: %r' % r.err)
        r = env.run('push', '--tls-verify=false', 'nosuch:1', reg.host + '/x:1', ok=False)
        check(r.returncode == 1, 'push of an unknown image fails')
        check(env.listing() == before, 'failed pushes leave the store as it was')
        tmp_empty(env)
        # A skopeo that is not there.
        r = env.run('pull', '--tls-verify=false', reg.host + '/strata/bb:1', ok=False,
                    wrap=lambda argv: no_path(env, argv))
        check('skopeo' in r.err and 'install' in r.err, 'a missing skopeo is named: %r' % r.err)
        tmp_empty(env)
        # A pull interrupted while skopeo works: skopeo ends, tmp/ is
        # emptied. The "registry" accepts connections and never answers.
        with socket.socket() as hang:
            hang.bind(('127.0.0.1', 0))
            hang.listen(16)
            p = subprocess.Popen(env.wrap([env.strata, '--store', env.store, 'pull', '--tls-verify=false',
                                           '127.0.0.1:%d/x:1' % hang.getsockname()[1]]),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env.env())
            deadline = time.monotonic() + DEADLINE
            skopeos = []
            while not skopeos and time.monotonic() < deadline and p.poll() is None:
                time.sleep(0.05)
                skopeos = [c for c in descendants() if comm(c) == 'skopeo']
            check(os.listdir(os.path.join(env.store, 'tmp')), 'the pull works in tmp/')
            # The store is not locked while skopeo waits on the network.
            env.run('tag', 'bb:1', 'bb:during', timeout=DEADLINE)
            env.run('images', timeout=DEADLINE)
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=DEADLINE)
        err = err.decode(errors='replace')
        check(p.returncode == 130 and 'interrupted' in err, 'an interrupted pull says so (%d): %r'
              % (p.returncode, err))
        check(skopeos and not [c for c in skopeos if os.path.exists('/proc/%d' % c)],
              'skopeo %r ended with strata' % skopeos)
        tmp_empty(env)


def test_login(env):
    need('skopeo')
    authfile = private_auth(env)
    with Registry(env.path('registry'), users={'alice': 's3cret'}) as reg:
        make_image(env, 'bb:1', 'behind-a-login')
        ref = reg.host + '/private/bb:1'
        r = env.run('push', '--tls-verify=false', 'bb:1', ref, ok=False)
        check('unauthorized' in r.err and 'strata login' in r.err, 'push without login: %r' % r.err)
        r = env.run('login', '--tls-verify=false', '-u', 'alice', '--password-stdin', reg.host,
                    input=b'wrong\n', ok=False)
        check('invalid username/password' in r.err, 'a wrong password: %r' % r.err)
        check(not os.path.exists(authfile) or reg.host not in open(authfile).read(),
              'a failed login stores nothing')
        r = env.run('login', '-u', 'alice', '-p', 's3cret', reg.host, ok=False)
        check(r.returncode == 2 and '--password-stdin' in r.err, '-p is refused: %r' % r.err)
        r = env.run('login', '--password-stdin', reg.host, input=b's3cret\n', ok=False)
        check(r.returncode == 2 and '-u' in r.err, '--password-stdin needs -u: %r' % r.err)
        env.run('login', '--tls-verify=false', '-u', 'alice', '--password-stdin', 'http://' + reg.host + '/',
                input=b's3cret\n')
        check(os.path.exists(authfile) and reg.host in open(authfile).read(),
              'credentials are kept in %s' % authfile)
        out = env.run('push', '--tls-verify=false', 'bb:1', ref).out.strip()
        cid = image_id(env, 'bb:1')
        other_store(env, 'store2')
        check(env.run('pull', '--tls-verify=false', ref).out.strip() == cid, 'pull after login: same image')
        check(run_cat(env, ref) == 'behind-a-login', 'and it runs')
        env.run('logout', reg.host)
        check(reg.host not in open(authfile).read(), 'logout forgets the registry')
        other_store(env, 'store3')
        r = env.run('pull', '--tls-verify=false', out, ok=False)
        check('strata login' in r.err, 'pull after logout needs a login again: %r' % r.err)
        r = env.run('logout', reg.host, ok=False)
        check('not logged in' in r.err, 'a second logout says so: %r' % r.err)
        if env.user:
            # Credentials docker keeps serve when strata has none of its own.
            os.unlink(authfile)
            os.makedirs(env.path('.docker'))
            with open(env.path('.docker', 'config.json'), 'w') as f:
                json.dump({'auths': {reg.host: {'auth': base64.b64encode(b'alice:s3cret').decode()}}}, f)
            env.give()
            check(env.run('pull', '--tls-verify=false', out).out.strip() == cid, 'pull with ~/.docker/config.json')
        tmp_empty(env)


def test_save_load(env):
    cid = make_image(env, 'bb:1', 'saved')
    env.run('tag', 'bb:1', '127.0.0.1:5000/other/bb:2')
    env.run('save', '-o', env.path('bb.tar'), 'bb:1')
    import tarfile
    with tarfile.open(env.path('bb.tar')) as t:
        man = json.load(t.extractfile('manifest.json'))
    check(man[0]['RepoTags'] == ['bb:1'], 'the archive names the image: %r' % man)
    # To standard output too, when it is not a terminal.
    with open(env.path('bb2.tar'), 'wb') as f:
        argv = env.wrap([env.strata, '--store', env.store, 'save', image_id(env, 'bb:1')])
        r = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE, env=env.env(), timeout=DEADLINE)
    check(r.returncode == 0, 'save to stdout: %s' % r.stderr.decode(errors='replace'))
    env.give()

    other_store(env, 'store2')
    r = env.run('load', '-i', env.path('bb.tar'))
    check(r.out.strip() == 'Loaded image: bb:1', 'load names what it loaded: %r' % r.out)
    check(image_id(env, 'bb:1') == cid, 'load gives the same image ID')
    check(run_cat(env, 'bb:1') == 'saved', 'the loaded image runs')
    tmp_empty(env)

    other_store(env, 'store3')
    with open(env.path('bb2.tar'), 'rb') as f:
        r = env.run('load', input=f.read())
    check(image_id(env, r.out.strip().split(': ', 1)[1]) == cid, 'load from stdin: same image')
    tmp_empty(env)

    # Not an archive: a clear error, nothing kept.
    with open(env.path('junk.tar'), 'wb') as f:
        f.write(b'not a tar' * 100)
    env.give()
    other_store(env, 'store4')
    r = env.run('load', '-i', env.path('junk.tar'), ok=False)
    check('load' in r.err and 'junk.tar' in r.err, 'junk is named: %r' % r.err)
    # A FIFO is refused before it is opened: nothing waits on it.
    os.mkfifo(env.path('fifo'))
    env.give()
    r = env.run('load', '-i', env.path('fifo'), ok=False, timeout=DEADLINE)
    check('FIFO' in r.err, 'a FIFO is named as such: %r' % r.err)
    # An OCI archive is no docker-archive: the message says what to use.
    other_store(env, 'store2')
    env.run('save', '--format', 'oci-archive', '-o', env.path('oci.tar'), 'bb:1')
    other_store(env, 'store5')
    r = env.run('load', '-i', env.path('oci.tar'), ok=False)
    check('strata import oci-archive' in r.err, 'an OCI archive: %r' % r.err)


# ---------------------------------------------------------------- podman

def mount(src, target, fstype, flags, data=None):
    if libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(),
                  flags, data and data.encode()) != 0:
        e = ctypes.get_errno()
        raise OSError(e, 'mount %s on %s: %s' % (src or fstype, target, os.strerror(e)))


class Podman:
    """Root podman with its whole state under dir: vfs storage, its own
    /var/lib/containers (the blob cache) and /run/crun, all in a mount
    namespace of a child process, so the host's podman is untouched.
    Host workarounds as in tests/podman: no cgroup v2 at
    /sys/fs/cgroup/unified, cgroupfs, file events, no network, explicit
    ulimits (root lacks CAP_SYS_RESOURCE here)."""

    def __init__(self, dir):
        need('podman')
        self.dir = dir
        for d in ('root', 'run', 'tmp', 'home', 'vlc', 'networks'):
            os.makedirs(os.path.join(dir, d), exist_ok=True)
        with open(self.p('containers.conf'), 'w') as f:
            f.write('[engine]\nimage_copy_tmp_dir = "%s"\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
                    '[network]\nnetwork_config_dir = "%s"\n' % (self.p('tmp'), self.p('networks')))
        with open(self.p('storage.conf'), 'w') as f:
            f.write('[storage]\ndriver = "vfs"\ngraphroot = "%s"\nrunroot = "%s"\n'
                    % (self.p('root'), self.p('run')))
        with open(self.p('auth.json'), 'w') as f:
            f.write('{}')
        self.env = {'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
                    'LANG': 'C.UTF-8', 'HOME': self.p('home'), 'TMPDIR': self.p('tmp'),
                    'CONTAINERS_CONF': self.p('containers.conf'),
                    'CONTAINERS_STORAGE_CONF': self.p('storage.conf'),
                    'REGISTRY_AUTH_FILE': self.p('auth.json')}

    def p(self, *n):
        return os.path.join(self.dir, *n)

    def setup_ns(self):
        """In the child, before exec: a private mount namespace."""
        if libc.unshare(CLONE_NEWNS) != 0:
            os._exit(90)
        try:
            mount(None, '/', None, MS_REC | MS_PRIVATE)
            libc.umount2(b'/sys/fs/cgroup/unified', 2)
            if os.path.isdir('/var/lib/containers'):
                mount(self.p('vlc'), '/var/lib/containers', None, MS_BIND)
            if os.path.isdir('/run/crun'):
                mount('strata-test-crun', '/run/crun', 'tmpfs', 0, 'mode=700')
        except OSError:
            os._exit(91)

    def __call__(self, *args, ok=True):
        argv = ['podman', '--root', self.p('root'), '--runroot', self.p('run'), '--storage-driver', 'vfs',
                '--tmpdir', self.p('tmp'), '--cgroup-manager=cgroupfs', '--events-backend=file'] + list(args)
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=self.env, cwd=self.dir, timeout=DEADLINE * 3, preexec_fn=self.setup_ns)
        r.out = r.stdout.decode(errors='replace')
        r.err = r.stderr.decode(errors='replace')
        if r.returncode in (90, 91):
            raise Skip('cannot make a private mount namespace for podman (%d)' % r.returncode)
        if ok and r.returncode:
            raise Fail('podman %s failed (%d): %s' % (' '.join(args), r.returncode, r.err.strip()[-2000:]))
        return r

    def run(self, *args, ok=True):
        return self('run', '--rm', '--network=none', '--pull=never', '--ulimit', 'nofile=20000:20000',
                    '--ulimit', 'nproc=4096:4096', *args, ok=ok)

    def cleanup(self):
        self('rm', '--all', '--force', ok=False)
        self('rmi', '--all', '--force', ok=False)


def descendants():
    me, out = os.getpid(), []
    kids = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(')') + 2:].split()
        if fields[0] != 'Z':
            kids.setdefault(int(fields[1]), []).append(int(d))
    todo = [me]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open('/proc/%d/comm' % pid) as f:
            return f.read().strip()
    except OSError:
        return ''


def settle(keep):
    """podman's cleanup processes outlive it for a moment, re-parented to
    us (a subreaper): wait for them, then end any left, by pid."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        left = [p for p in descendants() if p not in keep]
        if not left:
            return []
        if time.monotonic() > deadline:
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return left
        time.sleep(0.1)


def test_podman(env):
    need('skopeo')
    private_auth(env)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pm = Podman(env.path('podman'))
    with Registry(env.path('registry')) as reg:
        left = []
        try:
            # Can podman run a container at all here? If not, say why.
            probe = env.path('probe.tar')
            subprocess.run(['tar', '-C', os.path.dirname(BUSYBOX), '-cf', probe, os.path.basename(BUSYBOX)],
                           check=True)
            pm('import', probe, 'localhost/probe:1')
            r = pm.run('localhost/probe:1', '/busybox', 'true', ok=False)
            if r.returncode:
                raise Skip('podman cannot run a container on this host (exit %d): %s'
                           % (r.returncode, r.err.strip()[-500:]))

            # strata -> registry -> podman
            cid = make_image(env, 'bb:1', 'from-strata')
            ref = reg.host + '/strata/bb:1'
            env.run('push', '--tls-verify=false', 'bb:1', ref)
            pm('pull', '--tls-verify=false', ref)
            pid = pm('image', 'inspect', '--format', '{{.Id}}', ref).out.strip()
            check('sha256:' + pid == cid, 'podman sees our image ID (%s, ours %s)' % (pid, cid))
            out = pm.run(ref, '/bin/busybox', 'cat', '/etc/message').out.strip()
            check(out == 'from-strata', 'podman runs what strata pushed: %r' % out)

            # podman -> registry -> strata: an image podman made itself.
            root = env.path('pmroot')
            os.makedirs(os.path.join(root, 'bin'))
            os.makedirs(os.path.join(root, 'etc'))
            shutil.copy2(BUSYBOX, os.path.join(root, 'bin', 'busybox'))
            with open(os.path.join(root, 'etc', 'message'), 'w') as f:
                f.write('from-podman\n')
            subprocess.run(['tar', '-C', root, '-cf', env.path('pm.tar'), '.'], check=True)
            pref = reg.host + '/podman/made:2'
            pm('import', '--change', 'CMD ["/bin/busybox", "cat", "/etc/message"]', env.path('pm.tar'), pref)
            pm('push', '--tls-verify=false', pref)
            pmid = 'sha256:' + pm('image', 'inspect', '--format', '{{.Id}}', pref).out.strip()
            other_store(env, 'store2')
            got = env.run('pull', '--tls-verify=false', pref).out.strip()
            check(got == pmid, 'strata pulls podman\'s image with its ID (%s, podman %s)' % (got, pmid))
            check(run_cat(env, pref) == 'from-podman', 'strata runs what podman pushed')
            r = env.run('run', '--rm', '--net', 'none', pref, wrap=fuse(env))
            check(r.out.strip() == 'from-podman', 'with the CMD podman gave it: %r' % r.out)
            tmp_empty(env)
        finally:
            try:
                pm.cleanup()
            finally:
                left = settle([reg.proc.pid])
        check(not left, 'podman left processes behind: %r' % left)


def private_containers_dir():
    """skopeo run by root keeps a blob cache in /var/lib/containers/cache:
    this process and its children get a private one, in a mount namespace
    of their own that ends with the test. Returns the directory to remove."""
    if os.geteuid() != 0 or libc.unshare(CLONE_NEWNS) != 0:
        return None
    d = tempfile.mkdtemp(prefix='strata-registry-vlc-')
    try:
        mount(None, '/', None, MS_REC | MS_PRIVATE)
        os.makedirs('/var/lib/containers', mode=0o700, exist_ok=True)
        mount(d, '/var/lib/containers', None, MS_BIND)
    except OSError as e:
        print('note: skopeo uses the host\'s /var/lib/containers/cache: %s' % e, flush=True)
    return d


if __name__ == '__main__':
    vlc = private_containers_dir()
    try:
        rc = main([test_push_pull_run, test_build_push_pull, test_pull_reuses_layers, test_errors, test_login, test_save_load, test_podman])
    finally:
        if vlc:
            shutil.rmtree(vlc, ignore_errors=True)
    sys.exit(rc)
