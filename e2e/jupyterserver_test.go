package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/cmd/poolgate/app"
	"github.com/poolgate/poolgate/discovery"
)

// requireJupyterServer fails (CI) or skips when the hubs' Python cannot
// import jupyter_server (Debian python3-jupyter-server). PYTHONPATH
// passes to the hubs and their spawners (Spawner.env_keep).
func requireJupyterServer(t *testing.T) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", "import jupyter_server.serverapp").CombinedOutput()
	if err == nil {
		return
	}
	msg := "the hubs' python3 cannot import jupyter_server (apt-get install python3-jupyter-server): " + strings.TrimSpace(string(out))
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// kernelJS starts a kernel on the user's server from the page, connects
// to its channels over a WebSocket and runs one cell that prints the
// node, as JupyterLab and Notebook 7 do on jupyter_server. It resolves
// to the cell's output or to what went wrong.
const kernelJS = `(async () => {
  const base = location.pathname.replace(/^(\/user\/[^/]+).*$/, "$1");
  document.cookie = "_xsrf=e2exsrf; path=" + base + "/";
  const r = await fetch(base + "/api/kernels", {method: "POST", headers: {"X-XSRFToken": "e2exsrf", "Content-Type": "application/json"}, body: JSON.stringify({name: "python3"})});
  if (r.status !== 201) return "create kernel: HTTP " + r.status + " " + (await r.text()).slice(0, 200);
  const k = await r.json();
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + base + "/api/kernels/" + k.id + "/channels");
  return await new Promise((resolve) => {
    const id = "e2e-" + Math.random();
    let out = "";
    ws.onopen = () => ws.send(JSON.stringify({header: {msg_id: id, username: "e2e", session: "e2e", msg_type: "execute_request", version: "5.3", date: new Date().toISOString()},
      parent_header: {}, metadata: {}, channel: "shell", buffers: [],
      content: {code: "print('running on', open('NODE').read().strip())", silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true}}));
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (!m.parent_header || m.parent_header.msg_id !== id) return;
      if (m.msg_type === "stream") out += m.content.text;
      if (m.msg_type === "status" && m.content.execution_state === "idle" && out) { ws.close(); resolve(out.trim()); }
    };
    ws.onerror = () => resolve("websocket error");
    setTimeout(() => resolve("timeout; output so far: " + out), 45000);
  });
})()`

// TestJupyterServerThroughGateway: hubs whose users get jupyter_server
// (the backend of JupyterLab and Notebook 7): a Chromium login through
// the gateway, a kernel over a WebSocket through it, and the user counted
// on the node whose hub logged them in. TestJupyterHubThroughGateway runs
// the classic notebook.
func TestJupyterServerThroughGateway(t *testing.T) {
	requirePeers(t, "chromium", "jupyterhub")
	requireJupyterServer(t)
	users := []string{"alice", "bob"}
	var hubs []*hub
	p := newPool(t, poolOptions{nodes: 2, cfg: func(c *app.Config) {
		c.Health = discovery.HealthConfig{Interval: time.Second, Rise: 1, Fall: 3}
		for i, s := range c.Discovery.Static {
			ip, _, _ := strings.Cut(s.SSH, ":")
			h, err := launchHubApp(t, s.Name, ip, users, serverApp)
			if err != nil {
				t.Fatal(err)
			}
			hubs = append(hubs, h)
			c.Discovery.Static[i].HTTP = h.addr
		}
		c.HTTP.Listen = "127.0.0.1:0"
		no := false
		c.HTTP.UpstreamTLS = &no
	}})
	p.waitFor("both hubs up", func() bool {
		up := 0
		for _, st := range p.gw.Balancer().Nodes() {
			if st.Check(balancer.HTTP).Up {
				up++
			}
		}
		return up == len(hubs)
	})
	base := "https://" + p.gw.HTTPAddr()
	b := newBrowser(t, base)
	for _, u := range users {
		tb := b.session()
		tb.loginTo(u, landing(serverApp))
		node := ""
		for _, s := range p.gw.Balancer().Sessions() {
			if s.User == u && s.Protocol == balancer.HTTP {
				node = s.Node
			}
		}
		if node == "" {
			t.Fatalf("%s logged in through the gateway and is not counted", u)
		}
		// /files/ pages are sandboxed and the API's answers forbid
		// connections (CSP default-src 'none'); the server's own error
		// page is an ordinary page of its origin.
		tb.do("open a page of "+u+"'s server", chromedp.Navigate(base+"/user/"+u+"/poolgate-e2e"))
		ctx, cancel := context.WithTimeout(tb.ctx, 60*time.Second)
		out, err := chromedp.Run(ctx, chromedp.Evaluate[string](kernelJS, chromedp.EvalAwaitPromise))
		cancel()
		if err != nil {
			t.Fatalf("%s's kernel: %v", u, err)
		}
		if out != "running on "+node {
			t.Fatalf("%s's cell printed %q over the kernel's WebSocket; want %q", u, out, "running on "+node)
		}
		t.Logf("%s: jupyter_server kernel on %s through the gateway", u, node)
	}
}
