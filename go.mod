module github.com/kmsfs/kmsfs

go 1.26.8

require (
	github.com/aliyun/alibaba-cloud-sdk-go v1.63.107 // indirect
	github.com/awnumar/memcall v0.4.0 // indirect
	github.com/awnumar/memguard v0.23.0 // indirect
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	github.com/huaweicloud/huaweicloud-sdk-go-v3 v0.1.207 // indirect
	github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common v1.3.210 // indirect
	github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/kms v1.0.563 // indirect
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/term v0.48.0 // indirect
)
