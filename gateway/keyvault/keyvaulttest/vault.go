package keyvaulttest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	azruntime "github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys/fake"
)

// Operations, for counting and for injecting failures.
const (
	Get  = "get"  // GetKey: the public key
	Sign = "sign" // Sign
)

var apiOps = map[string]string{"Client.GetKey": Get, "Client.Sign": Sign}

// Credential is a fake token credential: the SDK's, which never calls
// anything.
func Credential() azcore.TokenCredential { return &azfake.TokenCredential{} }

// P256, P384 and RSA make a fresh key of that kind.
func P256(t testing.TB) crypto.Signer { return ecKey(t, elliptic.P256()) }
func P384(t testing.TB) crypto.Signer { return ecKey(t, elliptic.P384()) }
func RSA(t testing.TB, bits int) crypto.Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ECKey makes an EC key on the named curve (P-256, P-384, P-521).
func ECKey(t testing.TB, curve string) crypto.Signer {
	return ecKey(t, map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}[curve])
}

func ecKey(t testing.TB, c elliptic.Curve) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type version struct {
	id   string
	priv crypto.Signer
}

type failure struct {
	status     int
	retryAfter string
	times      int // -1: until Recover
}

// Vault is the fake vault. Make it with New.
type Vault struct {
	URL string // https://pool-kv.vault.azure.net/

	mu       sync.Mutex           // protects the fields below
	keys     map[string][]version // by name; the last version is the latest
	fails    map[string]*failure  // by operation
	calls    map[string]int       // authorized round trips, by operation
	disabled map[string]bool
	delay    time.Duration
	serial   int
}

// New makes an empty vault at https://pool-kv.vault.azure.net/.
func New() *Vault {
	return &Vault{
		URL:  "https://pool-kv.vault.azure.net/",
		keys: map[string][]version{}, fails: map[string]*failure{}, calls: map[string]int{}, disabled: map[string]bool{},
	}
}

// AddKey adds priv as a new version of key name (creating the key) and
// returns the version, which becomes the latest.
func (v *Vault) AddKey(name string, priv crypto.Signer) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.serial++
	sum := sha256.Sum256([]byte(fmt.Sprint(name, v.serial)))
	id := hex.EncodeToString(sum[:16])
	v.keys[name] = append(v.keys[name], version{id: id, priv: priv})
	return id
}

// Disable marks key name as disabled (every version).
func (v *Vault) Disable(name string) { v.mu.Lock(); v.disabled[name] = true; v.mu.Unlock() }

// Fail makes the next times calls of op (Get or Sign) answer status, with
// a Retry-After header when retryAfter > 0 (whole seconds, or
// retry-after-ms below a second); times -1 fails until Recover.
func (v *Vault) Fail(op string, status int, retryAfter time.Duration, times int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	f := &failure{status: status, times: times}
	if retryAfter > 0 {
		f.retryAfter = retryAfter.String()
	}
	v.fails[op] = f
}

// Recover ends every injected failure.
func (v *Vault) Recover() { v.mu.Lock(); clear(v.fails); v.mu.Unlock() }

// SetDelay makes every answer take d (a round trip to a real vault).
func (v *Vault) SetDelay(d time.Duration) { v.mu.Lock(); v.delay = d; v.mu.Unlock() }

// Calls counts the authorized round trips of op so far, failed ones
// included.
func (v *Vault) Calls(op string) int { v.mu.Lock(); defer v.mu.Unlock(); return v.calls[op] }

// Transport is what azkeys' ClientOptions.Transport takes: the fake
// server behind the injected failures.
func (v *Vault) Transport() policy.Transporter {
	return &transport{v: v, srv: fake.NewServerTransport(&fake.Server{GetKey: v.getKey, Sign: v.sign})}
}

type transport struct {
	v   *Vault
	srv *fake.ServerTransport
}

func (t *transport) Do(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") == "" { // the challenge round trip
		return t.srv.Do(req)
	}
	name, _ := req.Context().Value(azruntime.CtxAPINameKey{}).(string)
	op := apiOps[name]
	t.v.mu.Lock()
	t.v.calls[op]++
	delay := t.v.delay
	f := t.v.fails[op]
	var status int
	var retryAfter string
	if f != nil && f.times != 0 {
		status, retryAfter = f.status, f.retryAfter
		if f.times > 0 {
			f.times--
		}
	}
	t.v.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	if status == 0 {
		return t.srv.Do(req)
	}
	resp := &http.Response{
		StatusCode: status, Status: strconv.Itoa(status) + " " + http.StatusText(status), Request: req,
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   io.NopCloser(strings.NewReader(fmt.Sprintf(`{"error":{"code":%q,"message":"injected by keyvaulttest"}}`, codeFor(status)))),
	}
	if retryAfter != "" {
		d, _ := time.ParseDuration(retryAfter)
		if d >= time.Second {
			resp.Header.Set("Retry-After", strconv.Itoa(int(d.Round(time.Second)/time.Second)))
		} else {
			resp.Header.Set("retry-after-ms", strconv.Itoa(int(d/time.Millisecond)))
		}
	}
	return resp, nil
}

func codeFor(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "Throttled"
	case http.StatusForbidden:
		return "Forbidden"
	case http.StatusNotFound:
		return "KeyNotFound"
	}
	return "ServiceUnavailable"
}

// find returns the named version ("" for the latest).
func (v *Vault) find(name, ver string) (version, bool, bool) {
	// The fake server's path pattern lets the name run over the slash
	// before the version.
	name = strings.Trim(name, "/")
	if n, rest, ok := strings.Cut(name, "/"); ok {
		name, ver = n, rest+ver
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	vs := v.keys[name]
	if len(vs) == 0 {
		return version{}, false, false
	}
	if ver == "" {
		return vs[len(vs)-1], v.disabled[name], true
	}
	for _, k := range vs {
		if k.id == ver {
			return k, v.disabled[name], true
		}
	}
	return version{}, false, false
}

func (v *Vault) kid(name, ver string) *azkeys.ID {
	id := azkeys.ID(strings.TrimSuffix(v.URL, "/") + "/keys/" + name + "/" + ver)
	return &id
}

func (v *Vault) getKey(_ context.Context, name, ver string, _ *azkeys.GetKeyOptions) (resp azfake.Responder[azkeys.GetKeyResponse], errResp azfake.ErrorResponder) {
	k, disabled, ok := v.find(name, ver)
	if !ok {
		errResp.SetResponseError(http.StatusNotFound, "KeyNotFound")
		return
	}
	jwk := azkeys.JSONWebKey{KID: v.kid(strings.Split(strings.Trim(name, "/"), "/")[0], k.id), KeyOps: []*azkeys.KeyOperation{to.Ptr(azkeys.KeyOperationSign), to.Ptr(azkeys.KeyOperationVerify)}}
	switch pub := k.priv.Public().(type) {
	case *ecdsa.PublicKey:
		jwk.Kty = to.Ptr(azkeys.KeyTypeEC)
		jwk.Crv = to.Ptr(map[string]azkeys.CurveName{"P-256": azkeys.CurveNameP256, "P-384": azkeys.CurveNameP384, "P-521": azkeys.CurveNameP521}[pub.Curve.Params().Name])
		point, err := pub.Bytes() // 0x04 ‖ X ‖ Y
		if err != nil {
			errResp.SetError(err)
			return
		}
		size := (len(point) - 1) / 2
		jwk.X, jwk.Y = point[1:1+size], point[1+size:]
	case *rsa.PublicKey:
		jwk.Kty = to.Ptr(azkeys.KeyTypeRSA)
		jwk.N, jwk.E = pub.N.Bytes(), big.NewInt(int64(pub.E)).Bytes()
	default:
		jwk.Kty = to.Ptr(azkeys.KeyTypeOct)
	}
	resp.SetResponse(http.StatusOK, azkeys.GetKeyResponse{KeyBundle: azkeys.KeyBundle{Key: &jwk, Attributes: &azkeys.KeyAttributes{Enabled: to.Ptr(!disabled)}}}, nil)
	return
}

// sign signs as Key Vault does: the digest as given, ECDSA as raw R‖S.
func (v *Vault) sign(_ context.Context, name, ver string, p azkeys.SignParameters, _ *azkeys.SignOptions) (resp azfake.Responder[azkeys.SignResponse], errResp azfake.ErrorResponder) {
	k, disabled, ok := v.find(name, ver)
	if !ok {
		errResp.SetResponseError(http.StatusNotFound, "KeyNotFound")
		return
	}
	if disabled || p.Algorithm == nil {
		errResp.SetResponseError(http.StatusBadRequest, "BadParameter")
		return
	}
	hashes := map[azkeys.SignatureAlgorithm]crypto.Hash{
		azkeys.SignatureAlgorithmES256: crypto.SHA256, azkeys.SignatureAlgorithmES384: crypto.SHA384, azkeys.SignatureAlgorithmES512: crypto.SHA512,
		azkeys.SignatureAlgorithmRS256: crypto.SHA256, azkeys.SignatureAlgorithmRS384: crypto.SHA384, azkeys.SignatureAlgorithmRS512: crypto.SHA512,
	}
	h, known := hashes[*p.Algorithm]
	var out []byte
	switch priv := k.priv.(type) {
	case *ecdsa.PrivateKey:
		want := map[string]azkeys.SignatureAlgorithm{"P-256": azkeys.SignatureAlgorithmES256, "P-384": azkeys.SignatureAlgorithmES384, "P-521": azkeys.SignatureAlgorithmES512}[priv.Curve.Params().Name]
		if *p.Algorithm != want || len(p.Value) != h.Size() {
			errResp.SetResponseError(http.StatusBadRequest, "BadParameter")
			return
		}
		r, s, err := ecdsa.Sign(rand.Reader, priv, p.Value)
		if err != nil {
			errResp.SetError(err)
			return
		}
		size := (priv.Curve.Params().BitSize + 7) / 8
		out = append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...)
	case *rsa.PrivateKey:
		if !known || !strings.HasPrefix(string(*p.Algorithm), "RS") || len(p.Value) != h.Size() {
			errResp.SetResponseError(http.StatusBadRequest, "BadParameter")
			return
		}
		var err error
		if out, err = rsa.SignPKCS1v15(rand.Reader, priv, h, p.Value); err != nil {
			errResp.SetError(err)
			return
		}
	default:
		errResp.SetResponseError(http.StatusBadRequest, "BadParameter")
		return
	}
	resp.SetResponse(http.StatusOK, azkeys.SignResponse{KeyOperationResult: azkeys.KeyOperationResult{KID: v.kid(strings.Split(strings.Trim(name, "/"), "/")[0], k.id), Result: out}}, nil)
	return
}

// Digest hashes data with h, for tests that sign by hand.
func Digest(h crypto.Hash, data []byte) []byte {
	switch h {
	case crypto.SHA384:
		s := sha512.Sum384(data)
		return s[:]
	case crypto.SHA512:
		s := sha512.Sum512(data)
		return s[:]
	}
	s := sha256.Sum256(data)
	return s[:]
}
