module kubedbt.io/launcher

go 1.22
