package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// pythonPath is Debian's python3, which has python3-paramiko and
// python3-asyncssh; a python3 earlier in PATH (pyenv) may not.
const pythonPath = "/usr/bin/python3"

// Both scripts take one JSON argument (pyArgs), run clientCommand, copy
// upload to remote and remote to download over SFTP, read one line through
// a local forward to fwd_host:fwd_port, and print a pyResult as JSON. They
// check the gateway's host key against known_hosts.

const paramikoScript = `import json, sys, warnings
warnings.filterwarnings("ignore")
import paramiko

a = json.loads(sys.argv[1])
c = paramiko.SSHClient()
c.load_host_keys(a["known_hosts"])
c.set_missing_host_key_policy(paramiko.RejectPolicy())
c.connect(a["host"], port=a["port"], username=a["user"], key_filename=a["key"],
          allow_agent=False, look_for_keys=False, timeout=20)
res = {}
_, stdout, stderr = c.exec_command(a["command"])
res["stdout"] = stdout.read().decode()
res["stderr"] = stderr.read().decode()
res["exit"] = stdout.channel.recv_exit_status()
sftp = c.open_sftp()
sftp.put(a["upload"], a["remote"])
sftp.get(a["remote"], a["download"])
sftp.close()
# A local forward as paramiko's own forward.py demo does it: a
# direct-tcpip channel per connection.
ch = c.get_transport().open_channel("direct-tcpip", (a["fwd_host"], a["fwd_port"]), ("127.0.0.1", 0))
buf = b""
while True:
    d = ch.recv(4096)
    if not d:
        break
    buf += d
ch.close()
res["forward"] = buf.decode()
c.close()
print(json.dumps(res))
`

const asyncsshScript = `import asyncio, json, sys, warnings
warnings.filterwarnings("ignore")
import asyncssh

async def main(a):
    async with asyncssh.connect(a["host"], port=a["port"], username=a["user"],
                                client_keys=[a["key"]], known_hosts=a["known_hosts"],
                                agent_path=None) as conn:
        r = await conn.run(a["command"], check=False)
        res = {"stdout": r.stdout, "stderr": r.stderr, "exit": r.exit_status}
        async with conn.start_sftp_client() as sftp:
            await sftp.put(a["upload"], a["remote"])
            await sftp.get(a["remote"], a["download"])
        listener = await conn.forward_local_port("127.0.0.1", 0, a["fwd_host"], a["fwd_port"])
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.get_port())
        res["forward"] = (await reader.read()).decode()
        writer.close()
        listener.close()
        await listener.wait_closed()
    return res

print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
`

type pyArgs struct {
	Host       string `json:"host"`
	Port       int    `json:"port"`
	User       string `json:"user"`
	Key        string `json:"key"`
	KnownHosts string `json:"known_hosts"`
	Command    string `json:"command"`
	Upload     string `json:"upload"`
	Remote     string `json:"remote"`
	Download   string `json:"download"`
	FwdHost    string `json:"fwd_host"`
	FwdPort    int    `json:"fwd_port"`
}

type pyResult struct {
	Stdout  string `json:"stdout"`
	Stderr  string `json:"stderr"`
	Exit    int    `json:"exit"`
	Forward string `json:"forward"`
}

// pythonClient runs a client script as alice and checks what it reports.
func pythonClient(t *testing.T, p *pool, home, lib, script, fwdHost, fwdPort string) {
	dir := t.TempDir()
	path := filepath.Join(dir, lib+"_client.py")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p.port())
	fport, _ := strconv.Atoi(fwdPort)
	remote := "poolgate-e2e-" + lib + ".bin"
	t.Cleanup(func() { os.Remove("/home/alice/" + remote) })
	a := pyArgs{
		Host: "127.0.0.1", Port: port, User: "alice", Key: p.key, KnownHosts: p.knownHosts(dir, false),
		Command: clientCommand, Upload: randomFile(t, 8<<20), Remote: remote,
		Download: filepath.Join(dir, "back.bin"), FwdHost: fwdHost, FwdPort: fport,
	}
	arg, _ := json.Marshal(a)
	out, errs, code := tool(t, home, nil, pythonPath, path, string(arg))
	var r pyResult
	if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil {
		t.Fatalf("%s script: exit %d, %v; stdout %q; stderr:\n%s", lib, code, err, out, errs)
	}
	checkCommand(t, lib, r.Stdout, r.Stderr, r.Exit)
	copiedBothWays(t, lib+" sftp", a.Upload, remote, a.Download)
	if want := "hello from the node side\n"; r.Forward != want {
		t.Fatalf("%s local forward read %q, want %q", lib, r.Forward, want)
	}
}
