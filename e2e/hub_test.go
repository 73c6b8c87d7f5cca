package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/testutil"
)

// hub is a real JupyterHub (Debian's jupyterhub 3.0 with python3-notebook)
// on 127.0.0.N:8000, with DummyAuthenticator and SimpleLocalProcessSpawner.
// Each user's home on it holds NODE (the node's name) and node.ipynb, a
// notebook whose one cell prints NODE.
type hub struct {
	name, addr, dir string
	cmd             *exec.Cmd
	done            chan struct{}
	out             testutil.SyncBuffer
}

const nodeNotebook = `{"cells": [{"cell_type": "code", "execution_count": null, "id": "c1", "metadata": {}, "outputs": [],
 "source": ["print('running on', open('NODE').read().strip())"]}],
 "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
 "nbformat": 4, "nbformat_minor": 5}
`

// Single-user servers a hub can start (JUPYTERHUB_SINGLEUSER_APP): the
// classic notebook, and jupyter_server (Debian python3-jupyter-server, the
// backend of JupyterLab and Notebook 7 that current DSVMs ship), which has
// no /tree page of its own.
const (
	classicApp = "notebook.notebookapp.NotebookApp"
	serverApp  = "jupyter_server.serverapp.ServerApp"
)

// landing is where a user's browser lands once the hub started their
// server with app: a page the server guards with a redirect to the hub's
// OAuth, so the browser gets the server's cookie (jupyter_server's API
// answers 403 instead, and it has no /tree of its own).
func landing(app string) string {
	if app == serverApp {
		return "/files/node.html"
	}
	return "/tree"
}

// launchHub starts a hub whose users get the classic notebook.
func launchHub(t *testing.T, name, ip string, users []string) (*hub, error) {
	return launchHubApp(t, name, ip, users, classicApp)
}

// launchHubApp starts a hub whose single-user servers run app and waits
// until /hub/health answers 200. It may run off the test goroutine, so it
// returns errors rather than failing t.
func launchHubApp(t *testing.T, name, ip string, users []string, app string) (*hub, error) {
	h := &hub{name: name, addr: ip + ":8000", dir: t.TempDir()}
	for _, u := range users {
		home := filepath.Join(h.dir, "home", u)
		if err := os.MkdirAll(home, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(home, "NODE"), []byte(name+"\n"), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(home, "node.ipynb"), []byte(nodeNotebook), 0o644); err != nil {
			return nil, err
		}
		// A page (a browser shows it rather than downloading it) that
		// jupyter_server's users land on.
		if err := os.WriteFile(filepath.Join(home, "node.html"), []byte("<!doctype html><title>"+name+"</title><p id=node>"+name+"</p>\n"), 0o644); err != nil {
			return nil, err
		}
	}
	cfg := fmt.Sprintf(`c.JupyterHub.bind_url = 'http://%[1]s:8000'
c.JupyterHub.hub_ip = '%[1]s'
c.JupyterHub.hub_port = 8081
c.ConfigurableHTTPProxy.api_url = 'http://%[1]s:8001'
c.ConfigurableHTTPProxy.pid_file = '%[2]s/proxy.pid'
c.JupyterHub.pid_file = '%[2]s/hub.pid'
c.JupyterHub.db_url = 'sqlite:///%[2]s/hub.sqlite'
c.JupyterHub.cookie_secret_file = '%[2]s/cookie_secret'
c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.spawner_class = 'simple'
c.SimpleLocalProcessSpawner.home_dir_template = '%[2]s/home/{username}'
c.Spawner.args = ['--allow-root']
c.Spawner.default_url = '%[3]s'
c.Spawner.environment = {'JUPYTERHUB_SINGLEUSER_APP': '%[4]s'}
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
`, ip, h.dir, landing(app), app)
	cfgPath := filepath.Join(h.dir, "jupyterhub_config.py")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	h.cmd = exec.Command("jupyterhub", "-f", cfgPath)
	h.cmd.Dir = h.dir
	h.cmd.Env = append(os.Environ(), "NODE_PATH=/usr/share/nodejs")
	h.cmd.Stdout, h.cmd.Stderr = &h.out, &h.out
	h.cmd.WaitDelay = 5 * time.Second
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting jupyterhub for %s: %v", name, err)
	}
	h.done = make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(h.done) }()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("%s jupyterhub log (tail):\n%s", name, tailN(h.out.String(), 3000))
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + h.addr + "/hub/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return h, nil
			}
		}
		select {
		case <-h.done:
			return nil, fmt.Errorf("jupyterhub for %s exited at start (is %s in use?):\n%s", name, h.addr, tailN(h.out.String(), 3000))
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("jupyterhub for %s not healthy on %s:\n%s", name, h.addr, tailN(h.out.String(), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startHubs starts one hub per node, in parallel (each takes seconds).
func startHubs(t *testing.T, nodes []*node, users []string) []*hub {
	t.Helper()
	hubs := make([]*hub, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip, _, _ := strings.Cut(n.addr, ":")
			hubs[i], errs[i] = launchHub(t, n.name, ip, users)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return hubs
}

// stop ends the hub with SIGTERM, as systemd would: it stops its proxy and
// the single-user servers it spawned, then exits.
func (h *hub) stop() {
	if h.cmd.Process == nil {
		return
	}
	select {
	case <-h.done:
		return
	default:
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(20 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}

func tailN(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
