package httpgw

import (
	"html/template"
	"net/http"
	"strconv"
)

// pageTmpl is the small page the gateway answers with when it cannot pass
// a request on: which problem, and (for 503) that it retries by itself.
var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if .Retry}}<meta http-equiv="refresh" content="{{.Retry}}">{{end}}
<title>{{.Title}} · poolgate</title>
<style>
 body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;display:grid;place-items:center;min-height:100vh;background:#f6f7f9;color:#1d2330}
 main{max-width:34rem;padding:2rem;background:#fff;border-radius:.75rem;box-shadow:0 1px 4px #0002}
 h1{font-size:1.3rem;margin:0 0 .5rem} p{margin:.5rem 0} .muted{color:#5b6475;font-size:.9rem}
</style></head>
<body><main id="poolgate-page" data-status="{{.Status}}">
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{if .Retry}}<p class="muted">This page tries again every {{.Retry}} seconds.</p>{{end}}
<p class="muted">poolgate · HTTP {{.Status}}</p>
</main></body></html>
`))

type page struct {
	Status  int
	Title   string
	Message string
	Retry   int // seconds; 0 means no automatic retry
}

func writePage(w http.ResponseWriter, p page) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if p.Retry > 0 {
		h.Set("Retry-After", strconv.Itoa(p.Retry))
	}
	w.WriteHeader(p.Status)
	_ = pageTmpl.Execute(w, p)
}
