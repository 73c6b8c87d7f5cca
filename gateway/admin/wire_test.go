package admin

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"
)

// Every answer decodes into its exported type with no field left over
// and none missing, so a client decoding the types reads all the API says.
func TestAnswersAreTheWireTypes(t *testing.T) {
	last := time.Now().Add(-time.Minute).UTC()
	s, err := New(Config{}, testPool(t), Options{
		Discovery: func() DiscoveryJSON { return DiscoveryJSON{Source: "azure", LastSuccess: &last, Live: 2} },
		Scaler:    &fakeScaler{},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	for _, tc := range []struct {
		method, path string
		into         any
	}{
		{"GET", "/api/nodes", &NodesJSON{}},
		{"GET", "/api/sessions", &SessionsJSON{}},
		{"POST", "/api/nodes/node-1/drain", &DrainJSON{}},
		{"POST", "/api/nodes/node-1/undrain", &DrainJSON{}},
		{"POST", "/api/scale-in?idle=1h&dry_run=true", &ScaleInJSON{}},
		{"POST", "/api/nodes/node-9/drain", &ErrorJSON{}},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, localRequest(tc.method, tc.path, nil))
			dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(tc.into); err != nil {
				t.Fatalf("answer %s does not decode into %T: %v", rec.Body.Bytes(), tc.into, err)
			}
			again, _ := json.Marshal(tc.into)
			if !bytes.Equal(bytes.TrimSpace(rec.Body.Bytes()), again) {
				t.Fatalf("answer %s\nre-encoded %s", rec.Body.Bytes(), again)
			}
		})
	}
}
