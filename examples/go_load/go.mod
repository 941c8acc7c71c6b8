module shardload.example/go_load

go 1.19
