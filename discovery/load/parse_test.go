package load

import (
	"bytes"
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/poolgate/poolgate/discovery/load/loadtest"
)

const textType = "text/plain; version=0.0.4; charset=utf-8"

// want is an expected figure: nil means "not measured".
func want(v float64) *float64 { return &v }

func checkField(t *testing.T, name string, got, want *float64) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s = %v, want nil (not measured)", name, *got)
	case want != nil && got == nil:
		t.Errorf("%s = nil, want %v", name, *want)
	case want != nil && math.Abs(*got-*want) > 1e-6:
		t.Errorf("%s = %v, want %v", name, *got, *want)
	}
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const cpus4 = `# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 1
node_cpu_seconds_total{cpu="0",mode="user"} 1
node_cpu_seconds_total{cpu="1",mode="idle"} 1
node_cpu_seconds_total{cpu="2",mode="idle"} 1
node_cpu_seconds_total{cpu="3",mode="idle"} 1
`

func TestParseNode(t *testing.T) {
	for _, tt := range []struct {
		name, body  string
		cpu, memory *float64
	}{
		{"recorded node_exporter 1.5.0", string(readTestdata(t, "node-exporter-1.5.0.prom")), want(15.9 / 4), want(1 - 1717986304.0/17179869184)},
		{"all", cpus4 + "node_load1 2\nnode_memory_MemAvailable_bytes 25\nnode_memory_MemTotal_bytes 100\n", want(0.5), want(0.75)},
		{"untyped and in any order", "node_memory_MemTotal_bytes 100\nnode_load1 8\nnode_memory_MemAvailable_bytes 100\n" + cpus4, want(2), want(0)},
		{"no load1", cpus4 + "node_memory_MemAvailable_bytes 25\nnode_memory_MemTotal_bytes 100\n", nil, want(0.75)},
		{"no cpu series", "node_load1 2\nnode_memory_MemAvailable_bytes 25\nnode_memory_MemTotal_bytes 100\n", nil, want(0.75)},
		{"cpu series without cpu label", "node_cpu_seconds_total{mode=\"idle\"} 1\nnode_load1 2\n", nil, nil},
		{"no MemAvailable", cpus4 + "node_load1 2\nnode_memory_MemTotal_bytes 100\n", want(0.5), nil},
		{"MemTotal zero", cpus4 + "node_load1 2\nnode_memory_MemAvailable_bytes 0\nnode_memory_MemTotal_bytes 0\n", want(0.5), nil},
		{"available above total", "node_memory_MemAvailable_bytes 200\nnode_memory_MemTotal_bytes 100\n", nil, want(0)},
		{"NaN load", cpus4 + "node_load1 NaN\n", nil, nil},
		{"negative load", cpus4 + "node_load1 -1\n", nil, nil},
		{"Inf memory", "node_memory_MemAvailable_bytes 1\nnode_memory_MemTotal_bytes +Inf\n", nil, nil},
		{"empty", "", nil, nil},
		{"other metrics only", "up 1\n", nil, nil},
		{"malformed unrelated lines are ignored", "# HELP\nup{ 1\n\n  node_load1 4\n" + cpus4 + "bogus metric line\n", want(1), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseNode(strings.NewReader(tt.body), textType)
			if err != nil {
				t.Fatal(err)
			}
			checkField(t, "CPU", s.CPU, tt.cpu)
			checkField(t, "Memory", s.Memory, tt.memory)
			checkField(t, "GPU", s.GPU, nil)
			checkField(t, "GPUMemory", s.GPUMemory, nil)
			if !s.At.IsZero() {
				t.Errorf("At = %v, want zero (the scraper sets it)", s.At)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name, body, ctype, err string
	}{
		{"bad value", "node_load1 lots\n", textType, "parsing metrics"},
		{"our TYPE lines are kept", "# TYPE node_load1 gauge\n# TYPE node_load1 counter\nnode_load1 1\n", textType, "second TYPE line"},
		{"unterminated labels", "node_load1{cpu=\"0\" 1\n", textType, "parsing metrics"},
		{"protobuf not delimited", "x", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=text", "unsupported content type"},
		{"protobuf garbage", "\xff\xff\xff\xff", string(expfmt.NewFormat(expfmt.TypeProtoDelim)), "parsing metrics"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseNode(strings.NewReader(tt.body), tt.ctype)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want one containing %q", err, tt.err)
			}
		})
	}
	t.Run("not metrics", func(t *testing.T) {
		// No line is one of ours: nothing measured (the scraper calls
		// that a failure), not an error of the parser's.
		s, err := ParseNode(strings.NewReader("<html>hello</html>\n"), "text/html")
		if err != nil || s.Measured() {
			t.Fatalf("ParseNode(html) = %+v, %v; want nothing measured, no error", s, err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		body := strings.Repeat("# padding comment line\n", MaxBody/20)
		_, err := ParseNode(strings.NewReader(body), textType)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
	})
}

func TestParseContentTypes(t *testing.T) {
	body := cpus4 + "node_load1 2\nnode_memory_MemAvailable_bytes 25\nnode_memory_MemTotal_bytes 100\n"
	for _, ctype := range []string{
		textType,
		"text/plain; version=0.0.4; charset=utf-8; escaping=underscores",
		"text/plain; version=1.0.0; charset=utf-8",
		"text/plain",
		"",
		"nonsense;;",
	} {
		s, err := ParseNode(strings.NewReader(body), ctype)
		if err != nil {
			t.Errorf("Content-Type %q: %v", ctype, err)
			continue
		}
		checkField(t, ctype+" CPU", s.CPU, want(0.5))
	}
	t.Run("openmetrics", func(t *testing.T) {
		om := "# TYPE node_cpu_seconds counter\nnode_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1\nnode_cpu_seconds_total{cpu=\"1\",mode=\"idle\"} 1\n# TYPE node_load1 gauge\nnode_load1 3\n# EOF\n"
		s, err := ParseNode(strings.NewReader(om), "application/openmetrics-text; version=1.0.0; charset=utf-8")
		if err != nil {
			t.Fatal(err)
		}
		checkField(t, "CPU", s.CPU, want(1.5))
	})
	t.Run("delimited protobuf", func(t *testing.T) {
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
		for _, mf := range fams {
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
		s, err := ParseNode(&buf, string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
		if err != nil {
			t.Fatal(err)
		}
		checkField(t, "CPU", s.CPU, want(0.5))
		checkField(t, "Memory", s.Memory, want(0.75))
	})
}

func TestParseGPU(t *testing.T) {
	for _, tt := range []struct {
		name           string
		body           []byte
		gpu, gpuMemory *float64
	}{
		{"recorded A100 with MIG", readTestdata(t, "dcgm-a100-mig.prom"), nil, want(4845.0 / (4845 + 35690))},
		{"one GPU", loadtest.DCGMText(loadtest.GPU{Util: 40, UsedMiB: 1000, FreeMiB: 3000}), want(0.4), want(0.25)},
		{"least used of two", loadtest.DCGMText(
			loadtest.GPU{Util: 97, UsedMiB: 78000, FreeMiB: 2000},
			loadtest.GPU{Util: 12, UsedMiB: 10000, FreeMiB: 70000}), want(0.12), want(0.125)},
		{"both figures of the same GPU", loadtest.DCGMText(
			loadtest.GPU{Util: 0, UsedMiB: 39000, FreeMiB: 1000}, // idle, memory full: busy 0.975
			loadtest.GPU{Util: 90, UsedMiB: 4000, FreeMiB: 36000}), want(0.9), want(0.1)},
		{"tie goes to the lowest index", loadtest.DCGMText(
			loadtest.GPU{Util: 50, UsedMiB: 1, FreeMiB: 3},
			loadtest.GPU{Util: 50, UsedMiB: 2, FreeMiB: 2}), want(0.5), want(0.25)},
		{"ten GPUs, numeric order", loadtest.DCGMText(
			loadtest.GPU{Util: 100, UsedMiB: 1, FreeMiB: 1}, loadtest.GPU{Util: 100, UsedMiB: 1, FreeMiB: 1},
			loadtest.GPU{Util: 100, UsedMiB: 1, FreeMiB: 1}, loadtest.GPU{Util: 100, UsedMiB: 1, FreeMiB: 1},
			loadtest.GPU{Util: 100, UsedMiB: 1, FreeMiB: 1}, loadtest.GPU{Util: 100, UsedMiB: 1, FreeMiB: 1},
			loadtest.GPU{Util: 100, UsedMiB: 1, FreeMiB: 1}, loadtest.GPU{Util: 100, UsedMiB: 1, FreeMiB: 1},
			loadtest.GPU{Util: 100, UsedMiB: 1, FreeMiB: 1},
			loadtest.GPU{Util: 10, UsedMiB: 1, FreeMiB: 9}), want(0.1), want(0.1)},
		{"utilisation only", []byte("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\"} 30\nDCGM_FI_DEV_GPU_UTIL{gpu=\"1\"} 20\n"), want(0.2), nil},
		{"labels with spaces, as in the README", []byte("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\", UUID=\"GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52\"} 7\n"), want(0.07), nil},
		{"util over 100 is clamped", []byte("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\"} 250\n"), want(1), nil},
		{"series without gpu label", []byte("DCGM_FI_DEV_GPU_UTIL 30\n"), nil, nil},
		{"no GPU metrics", []byte("DCGM_FI_DEV_SM_CLOCK{gpu=\"0\"} 139\n"), nil, nil},
		{"zero memory", []byte("DCGM_FI_DEV_FB_USED{gpu=\"0\"} 0\nDCGM_FI_DEV_FB_FREE{gpu=\"0\"} 0\n"), nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseGPU(bytes.NewReader(tt.body), textType)
			if err != nil {
				t.Fatal(err)
			}
			checkField(t, "GPU", s.GPU, tt.gpu)
			checkField(t, "GPUMemory", s.GPUMemory, tt.gpuMemory)
			checkField(t, "CPU", s.CPU, nil)
			checkField(t, "Memory", s.Memory, nil)
		})
	}
}

// A length prefix that claims more than the body holds is an error, not
// an allocation of that size (expfmt's own decoder would try).
func TestParseProtoHugeLength(t *testing.T) {
	body := []byte("\xf1\xf1\xf1\xf100000000\x180\"\v*\t0") // prefix ≈ 12 GB
	_, err := ParseNode(bytes.NewReader(body), string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
	if err == nil || !strings.Contains(err.Error(), "parsing metrics") {
		t.Fatalf("err = %v, want a parse error", err)
	}
}

func BenchmarkParseNode(b *testing.B) {
	body := readTestdata(b, "node-exporter-1.5.0.prom")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseNode(bytes.NewReader(body), textType); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseGPU(b *testing.B) {
	body := loadtest.DCGMText(make([]loadtest.GPU, 8)...)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseGPU(bytes.NewReader(body), textType); err != nil {
			b.Fatal(err)
		}
	}
}
