package main

// The cloud KMS providers register their URI schemes (alibaba-kms,
// tencent-kms, huawei-kms) with the keyring package when imported.
import (
	_ "github.com/kmsfs/kmsfs/keyring/alibaba"
	_ "github.com/kmsfs/kmsfs/keyring/huawei"
	_ "github.com/kmsfs/kmsfs/keyring/tencent"
)
