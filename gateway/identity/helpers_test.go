package identity

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
)

func rsaKey() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }

func fmtAny(v any) string { return fmt.Sprint(v) }
