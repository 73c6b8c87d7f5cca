"""Drive an interactive ssh session under a real pseudo-terminal, as a
user at a terminal would: print, resize the window, type a password that
is read without echo (stty -echo, as read -s does), and leave. Used by recording_test.go; argv is the
ssh command line. Prints everything the terminal showed."""
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time


def winsize(fd, cols, rows):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


pid, fd = pty.fork()
if pid == 0:
    winsize(0, 80, 24)
    os.execvp(sys.argv[1], sys.argv[1:])

out = b""


def until(marker, timeout=30):
    global out
    end = time.time() + timeout
    while marker not in out:
        left = end - time.time()
        if left <= 0:
            sys.stderr.write("timeout waiting for %r; the terminal showed %r\n" % (marker, out[-800:]))
            sys.exit(3)
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data


def send(s):
    os.write(fd, s.encode())


send("echo READY-$((40+2))\n")
until(b"READY-42")
send("printf 'hello from the %s\\n' recording\n")
until(b"hello from the recording")
winsize(fd, 100, 30)
os.kill(pid, signal.SIGWINCH)
time.sleep(0.5)  # let ssh pass the window change on before asking
send("stty size\n")
until(b"30 100")
# read -s as a POSIX shell does it (the node's sh may be dash).
# The prompt is built so that the echoed command line does not hold it:
# the password goes only once the shell has turned echo off.
send("stty -echo; printf 'Pass%s: ' word; read pw; stty echo; echo; echo got-${#pw}\n")
until(b"Password: ")
send(sys.stdin.readline())
until(b"got-14")
send("exit\n")
try:
    until(b"\x00never", timeout=10)
except SystemExit:
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
