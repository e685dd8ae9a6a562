module vexxy.dev/gotools/govex

go 1.26.0

require github.com/openvex/go-vex v0.2.7

require (
	github.com/kr/text v0.2.0 // indirect
	github.com/package-url/packageurl-go v0.1.3 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
