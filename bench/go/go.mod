module greenbench

go 1.19
