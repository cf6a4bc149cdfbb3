package main

import (
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/alibaba"
	"github.com/kmsfs/kmsfs/keyring/alibaba/instance"
	"github.com/kmsfs/kmsfs/keyring/huawei"
	"github.com/kmsfs/kmsfs/keyring/local"
	"github.com/kmsfs/kmsfs/keyring/tencent"
)

// newRegistry returns the key providers kmsfs knows: the embedded local
// keyring, always available, and the cloud KMS providers (alibaba-kms,
// alibaba-kms-instance, tencent-kms, huawei-kms).
func newRegistry() *keyring.Registry {
	return keyring.NewRegistry(local.Register, alibaba.Register, instance.Register, huawei.Register, tencent.Register)
}
