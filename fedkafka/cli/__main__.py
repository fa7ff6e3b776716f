from fedkafka.cli import main

main()
