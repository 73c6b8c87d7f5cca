package load

import (
	"bytes"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fuzzTypes are the Content-Types a fuzzed body is parsed as.
var fuzzTypes = []string{
	textType,
	string(expfmt.NewFormat(expfmt.TypeProtoDelim)),
	"application/openmetrics-text; version=1.0.0; charset=utf-8",
	"",
}

// FuzzParse feeds untrusted exporter bodies to both parsers: they must
// not panic, and whatever they return must be a sane figure or nil.
// Seeds: every recorded output in testdata, plus a protobuf encoding.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.prom")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(0))
	}
	text := cpus4 + "node_load1 2\nnode_memory_MemAvailable_bytes 25\nnode_memory_MemTotal_bytes 100\nDCGM_FI_DEV_GPU_UTIL{gpu=\"0\",GPU_I_ID=\"1\"} 5\n"
	f.Add([]byte(text), uint8(0))
	f.Add([]byte(text+"# EOF\n"), uint8(2))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		f.Fatal(err)
	}
	var pb bytes.Buffer
	enc := expfmt.NewEncoder(&pb, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range fams {
		if err := enc.Encode(mf); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(pb.Bytes(), uint8(1))

	f.Fuzz(func(t *testing.T, body []byte, kind uint8) {
		ctype := fuzzTypes[int(kind)%len(fuzzTypes)]
		for name, parse := range map[string]func(io.Reader, string) (Sample, error){"ParseNode": ParseNode, "ParseGPU": ParseGPU} {
			s, err := parse(bytes.NewReader(body), ctype)
			if err != nil {
				if s.Measured() {
					t.Fatalf("%s returned figures with error %v: %+v", name, err, s)
				}
				continue
			}
			if s.CPU != nil && (math.IsNaN(*s.CPU) || math.IsInf(*s.CPU, 0) || *s.CPU < 0) {
				t.Fatalf("%s: CPU = %v", name, *s.CPU)
			}
			for field, v := range map[string]*float64{"Memory": s.Memory, "GPU": s.GPU, "GPUMemory": s.GPUMemory} {
				if v != nil && !(*v >= 0 && *v <= 1) {
					t.Fatalf("%s: %s = %v, want within [0, 1]", name, field, *v)
				}
			}
			if !s.At.IsZero() {
				t.Fatalf("%s set At", name)
			}
		}
	})
}
