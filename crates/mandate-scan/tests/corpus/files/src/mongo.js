const uri = "mongodb+srv://agent:obCX0m2nRgMEtsIt@cluster0.ab1cd.mongodb.net/tasks?retryWrites=true";
const mysqlUrl = `mysql://root:${process.env.MYSQL_ROOT_PASSWORD}@localhost/app`;
const legacy = "mysql://reports:g8O6hT008fT3G2@10.0.4.12:3306/reports";
