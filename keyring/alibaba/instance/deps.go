package instance

import (
	_ "github.com/alibabacloud-go/tea/tea"
	_ "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi"
	_ "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi-util"
	_ "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi-util/protobuf/api"
	_ "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/sdk"
	_ "google.golang.org/protobuf/proto"
)
